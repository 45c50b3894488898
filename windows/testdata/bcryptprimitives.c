/*
 * bcryptprimitives.dll shim for running Go test binaries under wine 8.0.
 *
 * Go 1.22 and later get their randomness from ProcessPrng in
 * bcryptprimitives.dll, which wine 8.0 does not ship, so every Go binary
 * stops at start-up. This stand-in exports ProcessPrng on top of advapi32's
 * SystemFunction036 (RtlGenRandom), which wine has. It is for tests only and
 * is never shipped with porttrace.
 *
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll \
 *            bcryptprimitives.c -ladvapi32
 */
#include <windows.h>

__declspec(dllimport) BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T size)
{
	/* RtlGenRandom takes a ULONG length: feed larger requests in chunks. */
	while (size > 0) {
		ULONG chunk = size > 0x7fffffff ? 0x7fffffff : (ULONG)size;

		if (!SystemFunction036(data, chunk))
			return FALSE;
		data += chunk;
		size -= chunk;
	}
	return TRUE;
}
