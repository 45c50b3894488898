// Package winapi declares the advapi32 (ETW), iphlpapi and psapi calls and
// structures that golang.org/x/sys/windows lacks. Its layouts are those of
// 64-bit Windows; callers refuse to run ETW in a 32-bit build.
//
// It is a package of its own because mkwinsyscall takes any package named
// windows for golang.org/x/sys/windows itself and would not qualify
// NewLazySystemDLL.
package winapi

// The directive sits in this untagged file so that go generate finds it on
// any host: it runs mkwinsyscall for the host, not for GOOS=windows.
//go:generate go run golang.org/x/sys/windows/mkwinsyscall -output zsyscall_windows.go syscall_windows.go
