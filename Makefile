# gvmm: make run boots the default guest, make test runs every test.
GO      ?= go
export PATH := $(PATH):/usr/local/go/bin

# The guest userland of make run: u-root's shell and core commands,
# built inside this module (the commands are tools in go.mod).
UROOT_CMDS := init gosh ls cat echo mount dmesg ps free uname date shutdown \
              cp mkdir rm lsmod insmod grep dd ip sleep hwclock
UROOT_PKGS := $(addprefix github.com/u-root/u-root/cmds/core/,$(UROOT_CMDS))

.PHONY: all build deps run test vet unit integration fuzz bench clean

all: build

# gvmm is static (no cgo): gvmm exec copies it into its guest as /init.
# The containerd shim and its guest agent are static too: the agent is
# the init of the container's VM.
build:
	CGO_ENABLED=0 $(GO) build -o bin/gvmm ./cmd/gvmm
	CGO_ENABLED=0 $(GO) build -o bin/containerd-shim-gvmm-v1 ./cmd/containerd-shim-gvmm-v1
	CGO_ENABLED=0 $(GO) build -o bin/gvmm-agent ./cmd/gvmm-agent
	$(GO) build -o bin/kvmhost ./tests/kvmhost/cmd/kvmhost

# gosh is built goshsmall: it reads lines through the kernel's terminal
# (cooked mode: backspace, Ctrl-U and Ctrl-W edit, no history or Tab), so
# input typed or piped ahead of the prompt is read line by line. Its
# full-screen editor (bubbline) ran the first piped line and then took no
# other: make run with piped input never ended.
bin/uroot.cpio: go.mod go.sum Makefile
	@mkdir -p bin
	$(GO) tool u-root -go-build-tags goshsmall -o $@ $(UROOT_PKGS)

# Boot the stock Debian kernel with the u-root initramfs to a shell on the
# serial console (Ctrl-A x quits). Without a usable /dev/kvm this runs
# inside the KVM test host, and says so.
run: build bin/uroot.cpio
	bin/kvmhost -auto -asset uroot.cpio=bin/uroot.cpio -- \
		bin/gvmm run --kernel {kernel} --initrd {asset:uroot.cpio} --memory 512M

# Debian packages the tests use: e2fsprogs for disk images,
# busybox-static for the shell gvmm exec runs in the test host, and tmux,
# the terminal gvmm top's test reads. The KVM
# test host's QEMU is Debian 13's, which the harness fetches into .cache/
# by itself (tests/qemu), as it does the kernel.
deps:
	@command -v mkfs.ext4 >/dev/null && command -v busybox >/dev/null && command -v tmux >/dev/null || { \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			e2fsprogs busybox-static tmux; }

vet:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

# Unit tests need no /dev/kvm.
unit:
	$(GO) test -race $$($(GO) list ./... | grep -v '/tests/')

# Integration tests run where /dev/kvm works, else inside the KVM test
# host (see tests/kvmhost); GVMM_KVMHOST=always forces the test host.
# One package at a time: each boots its own emulated test host, and two
# at once on our two cores starve each other.
integration:
	$(GO) test -count=1 -v -p 1 -timeout 20m ./tests/...

test: deps vet unit integration

# Every fuzz target outside tests/ (found with go test -list, so new ones
# join by themselves), one after another for FUZZTIME each. go test saves
# a crasher under the package's testdata/fuzz/; the other targets still
# run, and make fails at the end naming those that failed.
# The fuzzing runs on Go 1.27.3 (fetched once through the module proxy):
# Go 1.26's coordinator can fail a target with "context deadline
# exceeded" when -fuzztime ends (go.dev/issue/75804). Minimizing a new
# input is capped at FUZZMINIMIZE: the transport's worker goroutines make
# its coverage vary from run to run, and the default 60 s per input can
# spend the whole budget minimizing.
FUZZTIME ?= 20s
FUZZMINIMIZE ?= 5s
FUZZGO ?= GOTOOLCHAIN=go1.27.3 $(GO)
fuzz:
	@targets=$$($(GO) test -list '^Fuzz' $$($(GO) list ./... | grep -v '/tests/')) || { echo "$$targets"; exit 1; }; \
	failed=; \
	for t in $$(echo "$$targets" | awk '/^Fuzz/ { n[++c] = $$1; next } /^ok/ { for (i = 1; i <= c; i++) print $$2 ":" n[i]; c = 0 }'); do \
		pkg=$${t%:*}; name=$${t#*:}; \
		echo "== $$name ($$pkg) for $(FUZZTIME)"; \
		$(FUZZGO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) $$pkg || failed="$$failed $$name"; \
	done; \
	test -z "$$failed" || { echo "fuzz: failed:$$failed"; exit 1; }

# Benchmarks: the Go hot paths, then gvmm against QEMU's microvm in the
# same KVM host (tests/bench, 11 to 14 min in the test host), and ten
# containers at once with the containerd shim against runc. The
# comparison is printed as a Markdown table and kept in bin/bench.json;
# GVMM_BENCH_ROUNDS sets the runs of each VMM (default 5 boots, 3 disk runs).
bench: deps
	$(GO) test -run '^$$' -bench . -benchmem ./virtio/... ./devices/...
	@mkdir -p bin
	$(GO) test -count=1 -v -run '^$$' -bench . -benchtime 1x -timeout 80m ./tests/bench | tee bin/bench.log
	# Ten containers at once through containerd: gvmm's shim against runc.
	$(GO) test -count=1 -v -run '^$$' -bench BenchmarkStartTen -benchtime 1x -timeout 30m ./tests/containerd | tee -a bin/bench.log
	@{ echo; echo '| benchmark | metric | gvmm | QEMU | gvmm/QEMU | target |'; echo '| --- | --- | ---: | ---: | ---: | --- |'; \
		sed -n 's/^BENCHMD //p' bin/bench.log; } | tee bin/bench.md
	@sed -n 's/^BENCHJSON //p' bin/bench.log | awk 'BEGIN { print "[" } { printf "%s  %s", (NR > 1 ? ",\n" : ""), $$0 } END { print "\n]" }' > bin/bench.json
	@echo "bench: bin/bench.md, bin/bench.json"
	@! grep -q '^FAIL' bin/bench.log || { echo "bench: a benchmark failed; its figures above are partial (bin/bench.log)"; exit 1; }

clean:
	rm -rf bin
