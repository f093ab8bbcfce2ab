# Discotech. `make dev` builds and runs the all-in-one demo; `make test`
# installs what the tests need (Debian packages, when missing) and runs them.

export GOTOOLCHAIN := local
GO ?= go
BIN := bin

.PHONY: all build dev test deps check unit race e2e bench bench-go clean

all: build

build:
	$(GO) build -o $(BIN)/disco ./cmd/disco

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

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf $(BIN)
