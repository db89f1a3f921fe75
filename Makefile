# Serin — every target does its own set-up; see README.md.
SHELL := /bin/bash
CARGO ?= cargo
# Every local build has the development tools (`serin simulate`, `serin demo-chart`;
# src/devtools/), as hack/*.sh do (hack/lib.sh SERIN_FEATURES): one feature set, so no step
# rebuilds target/*/serin differently under a running Serin. The image builds without them.
CARGO_FEATURES ?= --features dev-tools

.PHONY: all build deps cluster-up cluster-down cert-manager up down lint test test-unit test-e2e test-lifecycle demo bench clean in-cluster test-in-cluster data-plane

all: build

build:
	$(CARGO) build --release $(CARGO_FEATURES) --bin serin

## The local environment (real control plane built from the Go module proxy, cached in ~/.cache/serin)
deps:
	hack/deps.sh all

cluster-up:
	hack/cluster.sh up

cluster-down:
	hack/cluster.sh down

# cert-manager (its CRDs, controller and cainjector on the host; docs/development.md).
cert-manager:
	hack/cert-manager.sh up

# The real node (kubelet + containerd + CNI, docs/real-node.md), its pods registered with
# Prometheus, and Traefik as its Gateway API data plane come up beside kwok's fake node.
up: data-plane
	hack/serin.sh up

# Everything `up` starts but Serin.
data-plane: cluster-up
	hack/prometheus.sh up
	hack/simulator.sh up
	hack/node.sh up
	hack/podtargets.sh up
	hack/traefik.sh up

# Serin's pods and the forwarders first, then the real node (if one is up): it holds mounts
# under .serin and needs the API server.
down:
	hack/in-cluster.sh down
	hack/traefik.sh down
	hack/cert-manager.sh down
	hack/podtargets.sh down
	hack/node.sh down
	hack/serin.sh down
	hack/simulator.sh down
	hack/prometheus.sh down
	hack/cluster.sh down

## Checks
# Clippy on the product (no features) and on the local build; then the unit test, built
# without features, that the product has no dev-tool subcommand.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
	$(CARGO) clippy --all-targets --locked $(CARGO_FEATURES) -- -D warnings
	$(CARGO) test --locked --lib -- cli::tests::the_product
	hack/deny.sh
	# The fuzz crate (its own workspace) must resolve from its lock file as the main one does.
	cd fuzz && $(CARGO) metadata --locked --format-version 1 >/dev/null
	hack/hadolint.sh

# Test layers: unit (lib, bins and the tests/ files that need no cluster) and e2e (the
# tests/e2e_*.rs files, each test `#[ignore]`d so that a bare `cargo test` needs no cluster).
E2E_TESTS := $(filter-out e2e_lifecycle e2e_in_cluster,$(basename $(notdir $(wildcard tests/e2e_*.rs))))
UNIT_TESTS := $(filter-out e2e_%,$(basename $(notdir $(wildcard tests/*.rs))))

test-unit:
	$(CARGO) test --locked $(CARGO_FEATURES) --lib --bins $(addprefix --test ,$(UNIT_TESTS))

# The e2e tests start what they need themselves; `up` first keeps its progress visible.
# Serin runs as its ServiceAccount with the shipped RBAC: any Forbidden in its log fails.
test-e2e: up
	hack/serin.sh audit reset
	$(CARGO) test --locked $(CARGO_FEATURES) $(addprefix --test ,$(E2E_TESTS)) -- --ignored
	hack/serin.sh audit check

# Serin in the cluster from its own image (hack/image.sh, hack/in-cluster.sh; docs/install.md):
# `kubectl apply -k` of a local overlay over manifests/, two replicas on the real node. It
# stops the host's Serin; `make up` brings that back and removes the pods.
in-cluster: data-plane
	hack/in-cluster.sh up

# The in-cluster tests install Serin in the cluster themselves, one test at a time (they
# share the installation), then return to the host's Serin.
test-in-cluster: data-plane
	$(CARGO) test --locked $(CARGO_FEATURES) --test e2e_in_cluster -- --ignored --test-threads=1
	hack/serin.sh up

# Stops the shared cluster, so it runs alone and last.
test-lifecycle:
	$(CARGO) test --locked $(CARGO_FEATURES) --test e2e_lifecycle -- --ignored --test-threads=1

# test-node stops the real node the e2e tests used and compares the host with its state before.
test: lint test-unit test-e2e test-in-cluster test-node test-lifecycle
	@echo "make test: all checks passed"

demo:
	hack/demo.sh

bench:
	$(CARGO) bench --locked $(CARGO_FEATURES) --bench admission
	$(MAKE) up
	$(CARGO) bench --locked $(CARGO_FEATURES) --bench blast
	$(CARGO) bench --locked $(CARGO_FEATURES) --bench scale

clean: down
	rm -rf .serin target

## The real node alone (kubelet + containerd + CNI on a bridge of its own; see
## docs/real-node.md); `make up` starts it too, `make down` (and so `clean`) stops it.
.PHONY: node-up node-down test-node
node-up: cluster-up
	hack/node.sh up

node-down:
	hack/node.sh down

# Starts and stops the real node itself; compares the host before and after.
test-node: cluster-up
	hack/test-node.sh
