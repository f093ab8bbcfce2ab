# Discotech. `make dev` builds and runs the all-in-one demo; `make test`
# installs what the tests need (Debian packages, when missing) and runs them.

export GOTOOLCHAIN := local
GO ?= go
BIN := bin

.PHONY: all build shim dev test deps check unit race e2e bench bench-go pgo clean

all: build

# disco carries libdisco.so (go:embed, under the disco_shim tag), so that
# disco exec needs nothing else installed.
build: shim
	cp $(BIN)/libdisco.so shim/libdisco.so
	$(GO) build -tags disco_shim -o $(BIN)/disco ./cmd/disco

# libdisco.so, the LD_PRELOAD shim (docs/shim.md). shim's Go tests build it
# with this rule too, into their own directory, once more with
# SHIM_SANITIZE='-fsanitize=address,undefined'.
SHIM_CC ?= gcc
SHIM_CFLAGS := -std=c11 -O2 -g -fPIC -shared -fvisibility=hidden -pthread \
	-Wall -Wextra -Werror -Wl,--no-undefined
SHIM_SANITIZE ?=

shim: $(BIN)/libdisco.so

$(BIN)/libdisco.so: $(wildcard shim/src/*.c shim/src/*.h shim/table.h)
	@mkdir -p $(BIN)
	$(SHIM_CC) $(SHIM_CFLAGS) $(SHIM_SANITIZE) -o $@ $(filter %.c,$^) -ldl

dev: build
	$(BIN)/disco dev

# Everything CI runs: tools and peers, static checks, then every test with
# the race detector.
test: deps check race

deps:
	@.ci/deps

check:
	@grep -qx 'go 1.26' go.mod || { echo "go.mod must say 'go 1.26' (Go 1.26 is the ceiling); pick module versions that allow it"; exit 1; }
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }
	$(GO) vet ./...

unit:
	$(GO) test -count=1 ./...

race:
	$(GO) test -race -count=1 -timeout 15m ./...

e2e:
	$(GO) test -count=1 ./e2e

# Go micro-benchmarks beside the hot code, then the end-to-end benchmarks.
bench: bench-go
	$(GO) run ./bench/registry
	$(GO) run ./bench/dns
	$(GO) run ./bench/propagation
	$(GO) run ./bench/transparent
	$(GO) run ./bench/prefetch
	$(GO) run ./bench/router

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# cmd/disco/default.pgo is the CPU profile Go's compiler optimises disco
# with (profile-guided optimisation: go build's -pgo=auto finds it): the
# router under bench/router's load. Rerun after large changes to hot code.
pgo:
	$(GO) run ./bench/router -only discotech -rounds 1 -duration 20s -latency-duration 0 -profile cmd/disco/default.pgo

clean:
	rm -rf $(BIN)
