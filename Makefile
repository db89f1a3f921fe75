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

# The real node first (if one is up): it holds mounts under .serin and needs the API server.
down:
	hack/node.sh down
	hack/serin.sh down
	hack/simulator.sh down
	hack/prometheus.sh down
	hack/cluster.sh down

## Checks
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
	hack/hadolint.sh

test-unit:
	$(CARGO) test --locked --lib --bins

# The e2e tests start what they need themselves; `up` first keeps its progress visible.
test-e2e: up
	$(CARGO) test --locked --tests

# Stops the shared cluster, so it runs alone and last.
test-lifecycle:
	$(CARGO) test --locked --test e2e_lifecycle -- --ignored --test-threads=1

test: lint test-e2e test-lifecycle
	@echo "make test: all checks passed"

demo:
	hack/demo.sh

bench:
	$(CARGO) bench --locked --bench admission
	$(MAKE) up
	$(CARGO) bench --locked --bench scale

clean: down
	rm -rf .serin target

## The real node (kubelet + containerd + CNI on a bridge of its own; see docs/real-node.md).
## Not part of `up`/`test` yet; `make down` (and so `clean`) stops it.
.PHONY: node-up node-down test-node
node-up: cluster-up
	hack/node.sh up

node-down:
	hack/node.sh down

# Starts and stops the real node itself; compares the host before and after.
test-node: cluster-up
	hack/test-node.sh
