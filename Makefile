# porttrace: build, regenerate the eBPF objects, test.
GO ?= go
MULTIARCH := $(shell gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
export BPF2GO_CFLAGS := -I/usr/include/$(MULTIARCH)
export BPF2GO_CC ?= clang
export BPF2GO_STRIP ?= llvm-strip

.PHONY: build generate test lint bench clean
build:
	$(GO) build -o porttrace ./cmd/porttrace

# Needs clang, llvm and libbpf-dev (Debian packages of the same names).
generate:
	cd bpf && $(GO) generate ./...

# The test command of the README: unit tests, then the privileged ones as root.
test:
	$(GO) vet ./...
	GOOS=windows $(GO) vet ./...
	$(GO) test -count=1 ./...

lint:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"
	$(GO) vet ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./tracer/

clean:
	rm -f porttrace
