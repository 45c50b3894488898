#!/bin/sh
# Re-copies into include/bpf the libbpf headers that the eBPF programs
# include, and those they include in turn, from Debian's libbpf-dev, so
# that `make generate` needs clang and llvm but not libbpf-dev. Run it after
# installing the libbpf-dev to copy from, then `make generate` and commit.
set -eu
cd "$(dirname "$0")"

src=/usr/include/bpf
version=$(dpkg-query -W -f='${Version}' libbpf-dev) || {
	echo "libbpf-dev is not installed: apt-get install libbpf-dev" >&2
	exit 1
}

# Copied afresh, so that a header no longer included does not linger.
rm -rf include
mkdir -p include/bpf
todo=$(sed -n 's|^#include <bpf/\([^>]*\)>.*|\1|p' ./*.c ./*.h)
while [ -n "$todo" ]; do
	set -- $todo
	h=$1
	shift
	todo=$*
	[ -f "include/bpf/$h" ] && continue
	cp "$src/$h" include/bpf/
	# libbpf's headers include each other as "x.h" or <bpf/x.h>.
	todo="$todo $(sed -n -e 's|^#include <bpf/\([^>]*\)>.*|\1|p' \
		-e 's|^#include "\([^"/]*\)".*|\1|p' "include/bpf/$h")"
done
cp /usr/share/doc/libbpf-dev/copyright include/copyright

cat >include/README <<EOF
The libbpf headers that the eBPF programs in bpf/ include, copied unchanged
from $src of Debian's libbpf-dev $version
by bpf/update-libbpf-headers.sh, which also writes this file.

They are libbpf's, under LGPL-2.1 OR BSD-2-Clause: see copyright (Debian's
copyright file for libbpf, copied with them).
EOF
echo "copied $(ls include/bpf | tr '\n' ' ')from libbpf-dev $version"
