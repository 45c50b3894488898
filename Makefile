# porttrace: build, regenerate the eBPF objects, test.
GO ?= go
MULTIARCH := $(shell gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
# bpf2go reads these; the multiarch folder holds <asm/types.h> on Debian.
export BPF2GO_CC ?= clang
export BPF2GO_STRIP ?= llvm-strip
export BPF2GO_CFLAGS := -I/usr/include/$(MULTIARCH)
# The clang major that built the committed eBPF objects (Debian 12's): another
# major emits other code, so check-generated would report a difference that
# is the compiler's, not the source's.
CLANG_MAJOR := 14

VMTEST_DIR ?= /tmp/porttrace-vmtest

.PHONY: build man generate clang-version check-generated test lint vmtest test-windows bench clean image test-deploy

# A static, pure-Go binary: without cgo's dynamic loading porttrace starts
# in 0.75 ms less, which a who answered by the daemon feels (users only the
# name service knows are asked of getent).
build:
	CGO_ENABLED=0 $(GO) build -o porttrace ./cmd/porttrace

# The man page, written from the same flag definitions as --help and the
# shell completions (porttrace completion bash|zsh|fish).
man:
	$(GO) run ./cmd/porttrace man > porttrace.1

# Needs clang and llvm (Debian packages of those names): libbpf's headers
# are vendored in bpf/include, the kernel's uapi ones come with clang (via
# libc6-dev's linux-libc-dev).
generate: clang-version
	cd bpf && $(GO) generate ./...

clang-version:
	@major=$$($(BPF2GO_CC) --version 2>/dev/null | sed -n 's/.*clang version \([0-9]*\).*/\1/p'); \
	found="clang $$major found"; test -n "$$major" || found="no clang found as BPF2GO_CC=$(BPF2GO_CC)"; \
	test "$$major" = $(CLANG_MAJOR) || { \
		echo "$$found, the committed objects are built with clang $(CLANG_MAJOR): install clang-$(CLANG_MAJOR) or set BPF2GO_CC" >&2; \
		exit 1; }

# Fails when the committed eBPF objects are not what the C source builds.
check-generated: generate
	git diff --exit-code -- bpf/ || { echo "bpf/: generated files are stale: run make generate and commit" >&2; exit 1; }

# The README's test command. Run as root: the privileged tests load eBPF
# programs (with CI=true they fail instead of skipping without root). One
# package at a time (-p 1): their privileged tests storm loopback and watch
# every port, and two packages at once would make each other's noise.
test: lint
	$(GO) test -race -count=1 -p 1 ./...

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$unformatted" || { echo "gofmt needed: $$unformatted" >&2; exit 1; }
	$(GO) vet ./...
	GOOS=windows $(GO) vet ./...
	GOOS=windows $(GO) build ./...

# The daemon's container image (cmd/porttrace/deploy/Dockerfile): the
# static binary alone, in a build context of its own.
IMAGE ?= porttrace:latest
image:
	ctx=$$(mktemp -d) && trap 'rm -rf "$$ctx"' EXIT && \
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o "$$ctx/porttrace" ./cmd/porttrace && \
	cp cmd/porttrace/deploy/Dockerfile "$$ctx/" && \
	docker build -t $(IMAGE) "$$ctx"

# The image run under Docker as the DaemonSet runs it. Needs root, Docker
# (Debian's docker.io: the test starts dockerd when none answers) and
# busybox-static; not in make test, for the Docker daemon it needs.
test-deploy:
	PORTTRACE_TEST_DEPLOY=1 $(GO) test -count=1 -run '^TestDocker' ./cmd/porttrace/deploy

# The privileged tests inside Debian's 5.10, 6.1 and 6.12 kernels under qemu.
vmtest:
	mkdir -p $(VMTEST_DIR)
	CGO_ENABLED=0 $(GO) test -c -o $(VMTEST_DIR)/tracer.test ./tracer/linux
	CGO_ENABLED=0 $(GO) test -c -o $(VMTEST_DIR)/porttrace.test ./cmd/porttrace
	.ci/vmtest --timeout 900 -- "tracer=$(VMTEST_DIR)/tracer.test -test.v -test.run ^TestKernel -test.skip Slow -test.timeout 600s" \
		"porttrace=$(VMTEST_DIR)/porttrace.test -test.v -test.run ^Test(WithoutPrivileges|JSONLines|LinesInTimeOrder)$$ -test.timeout 120s"

# The Windows build's tests, under wine.
test-windows:
	.ci/wine-test

# The side-by-side benchmark (cmd/portbench): porttrace and its daemon
# against no tracer, tcpstates and bpftrace, their memory, who through the
# daemon, history's cost, and the Go benchmarks. Run as root, about 7
# minutes; bench-quick is its CI smoke run (a minute or two).
bench:
	$(GO) run ./cmd/portbench

.PHONY: bench-quick
bench-quick:
	$(GO) run ./cmd/portbench --quick

clean:
	rm -f porttrace porttrace.1
	rm -rf $(VMTEST_DIR)
