# wsmesh: `make demo` plays the guide on this machine; `make test` installs
# the test peers it needs and runs every check CI runs.
GO ?= go
FUZZTIME ?= 10s

.PHONY: demo test deps lint unit fuzz build

build:
	$(GO) build -o bin/wsmesh ./cmd/wsmesh

demo:
	$(GO) run ./cmd/wsmesh demo

deps:
	./scripts/install-test-deps.sh
	$(GO) mod download

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 40m ./...

fuzz:
	./scripts/fuzz-short.sh $(FUZZTIME)

test: deps lint unit fuzz

.PHONY: bench-compare
# bench-compare measures wsmesh against HAProxy, nginx and nghttpx on loopback (installs missing peers).
bench-compare:
	./bench/compare.sh $(BENCH_ARGS)
