# Serin — every target does its own set-up; see README.md.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all build deps cluster-up cluster-down up down lint test test-unit test-e2e test-lifecycle demo bench clean

all: build

build:
	$(CARGO) build --release --bin serin

## The local environment (real control plane built from the Go module proxy, cached in ~/.cache/serin)
deps:
	hack/deps.sh all

cluster-up:
	hack/cluster.sh up

cluster-down:
	hack/cluster.sh down

up: cluster-up
	hack/prometheus.sh up
	hack/simulator.sh up
	hack/serin.sh up

down:
	hack/serin.sh down
	hack/simulator.sh down
	hack/prometheus.sh down
	hack/cluster.sh down

## Checks
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
	hack/deny.sh
	hack/hadolint.sh

# Test layers: unit (lib, bins and the tests/ files that need no cluster) and e2e (the
# tests/e2e_*.rs files, each test `#[ignore]`d so that a bare `cargo test` needs no cluster).
E2E_TESTS := $(filter-out e2e_lifecycle,$(basename $(notdir $(wildcard tests/e2e_*.rs))))
UNIT_TESTS := $(filter-out e2e_%,$(basename $(notdir $(wildcard tests/*.rs))))

test-unit:
	$(CARGO) test --locked --lib --bins $(addprefix --test ,$(UNIT_TESTS))

# The e2e tests start what they need themselves; `up` first keeps its progress visible.
test-e2e: up
	$(CARGO) test --locked $(addprefix --test ,$(E2E_TESTS)) -- --ignored

# Stops the shared cluster, so it runs alone and last.
test-lifecycle:
	$(CARGO) test --locked --test e2e_lifecycle -- --ignored --test-threads=1

test: lint test-unit test-e2e test-lifecycle
	@echo "make test: all checks passed"

demo:
	hack/demo.sh

bench:
	$(CARGO) bench --locked --bench admission
	$(MAKE) up
	$(CARGO) bench --locked --bench scale

clean: down
	rm -rf .serin target
