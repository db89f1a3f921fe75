#!/usr/bin/env bash
# Builds (once) and caches the local environment's binaries under ~/.cache/serin/:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kubelet (the list is
# K8S_BINARIES in versions.env) from the Go module k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3, kwok, Debian's Prometheus, and
# controller-gen (sigs.k8s.io/controller-tools, which hack/crds.sh runs to make Gloo's CRDs),
# and on request Traefik, Helm (helm.sh/helm/v4, which the chart tests run) and cert-manager
# (hack/cert-manager/, a small main of ours over the module github.com/cert-manager/cert-manager).
# Each component lands in its own versioned directory with a `.complete` marker written
# last, so a build that was interrupted is never taken as done.
#
# Usage: hack/deps.sh [all|k8s|etcd|kwok|prometheus|controller-gen|traefik|helm|cert-manager]
#   (helm and cert-manager print their bin directory)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"
CACHE=${SERIN_CACHE:-$HOME/.cache/serin}
mkdir -p "$CACHE"
export GOFLAGS=${GOFLAGS:-} GOTOOLCHAIN=${GOTOOLCHAIN:-local}
start=$(date +%s)
K8S_DIR=$CACHE/kubernetes-$K8S_VERSION-$(printf %s "$K8S_BINARIES" | sha256sum | cut -c1-8)

log() { printf '[deps %4ss] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }

# Runs a long command while printing a heartbeat every 30 s so it never looks hung.
with_heartbeat() {
  local what=$1; shift
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 30); do sleep 1; kill -0 "$pid" 2>/dev/null || break; done
    kill -0 "$pid" 2>/dev/null && log "$what: still working…"
  done
  wait "$pid"
}

build_k8s() {
  local dir=$K8S_DIR b pkgs=()
  for b in $K8S_BINARIES; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  [ -f "$dir/.complete" ] && return 0
  log "kubernetes $K8S_VERSION: preparing the wrapper module (cold build: 7-20 minutes on 2 cores)"
  rm -rf "$dir"; mkdir -p "$dir/src" "$dir/bin"
  local stg="v0.${K8S_VERSION#v1.}" gomod
  # k8s.io/kubernetes' own go.mod replaces every staging module with ./staging/...; a
  # dependent module must name real versions instead, so derive that list from the source.
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    printf 'module serin.dev/localenv/kubernetes\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\n' "$K8S_VERSION"
    awk -v v="$stg" '$2=="=>" && $3 ~ /^\.\/staging\// {print "replace " $1 " => " $1 " " v}' "$gomod"
  } >"$dir/src/go.mod"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    printf '\t_ "%s"\n' "${pkgs[@]}"
    printf ')\n'
  } >"$dir/src/tools.go"
  log "kubernetes: go mod tidy (downloads modules)"
  (cd "$dir/src" && with_heartbeat "go mod tidy" go mod tidy)
  local minor ldf="" p
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldf="$ldf -X $p.gitTreeState=clean -X $p.gitCommit=0000000000000000000000000000000000000000"
    ldf="$ldf -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  log "kubernetes: compiling $K8S_BINARIES"
  (cd "$dir/src" && CGO_ENABLED=0 with_heartbeat "go build kubernetes" \
    go build -trimpath -ldflags "-s -w $ldf" -o "$dir/bin/" "${pkgs[@]}")
  for b in $K8S_BINARIES; do
    [ "$b" = kubectl ] && continue
    "$dir/bin/$b" --version | grep -q "$K8S_VERSION"
  done
  "$dir/bin/kubectl" version --client | grep -q "$K8S_VERSION"
  touch "$dir/.complete"
  log "kubernetes $K8S_VERSION: done"
}

build_etcd() {
  local dir=$CACHE/etcd-$ETCD_VERSION
  [ -f "$dir/.complete" ] && return 0
  log "etcd $ETCD_VERSION: building (1-3 minutes)"
  rm -rf "$dir"; mkdir -p "$dir/src" "$dir/bin"
  # Its own module: sharing one with kubernetes would let version selection move the
  # apiserver's etcd client.
  printf 'module serin.dev/localenv/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "$ETCD_VERSION" >"$dir/src/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$dir/src/tools.go"
  (cd "$dir/src" && with_heartbeat "etcd go mod tidy" go mod tidy &&
    CGO_ENABLED=0 with_heartbeat "go build etcd" \
      go build -trimpath -ldflags "-s -w" -o "$dir/bin/etcd" go.etcd.io/etcd/server/v3)
  "$dir/bin/etcd" --version >/dev/null
  touch "$dir/.complete"
  log "etcd: done"
}

build_kwok() {
  local dir=$CACHE/kwok-$KWOK_VERSION
  [ -f "$dir/.complete" ] && return 0
  log "kwok $KWOK_VERSION: building (1-2 minutes)"
  rm -rf "$dir"; mkdir -p "$dir/bin" "$dir/stages"
  CGO_ENABLED=0 GOBIN="$dir/bin" with_heartbeat "go install kwok" \
    go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # The default stages ship inside the module; keep a copy beside the binary.
  local src
  src=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage
  local f
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cat "$src/$f"; printf '\n---\n'
  done >"$dir/stages/default.yaml"
  touch "$dir/.complete"
  log "kwok: done"
}

build_prometheus() {
  local dir=$CACHE/prometheus-deb
  [ -f "$dir/.complete" ] && return 0
  log "prometheus: fetching the Debian package (no service is installed or started)"
  rm -rf "$dir"; mkdir -p "$dir/deb" "$dir/root"
  if ! (cd "$dir/deb" && apt-get download "$PROMETHEUS_DEB" >/dev/null 2>&1); then
    log "prometheus: apt-get download failed; refreshing the package lists once"
    apt-get update -qq >/dev/null 2>&1 || true
    (cd "$dir/deb" && apt-get download "$PROMETHEUS_DEB" >/dev/null)
  fi
  dpkg-deb -x "$dir"/deb/*.deb "$dir/root"
  mkdir -p "$dir/bin"
  ln -sf ../root/usr/bin/prometheus "$dir/bin/prometheus"
  ln -sf ../root/usr/bin/promtool "$dir/bin/promtool"
  "$dir/bin/prometheus" --version >/dev/null 2>&1
  touch "$dir/.complete"
  log "prometheus: done"
}

build_controller_gen() {
  local dir=$CACHE/controller-gen-$CONTROLLER_TOOLS_VERSION
  [ -f "$dir/.complete" ] && return 0
  log "controller-gen $CONTROLLER_TOOLS_VERSION: building (about a minute)"
  rm -rf "$dir"; mkdir -p "$dir/bin"
  CGO_ENABLED=0 GOBIN="$dir/bin" with_heartbeat "go install controller-gen" \
    go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION"
  "$dir/bin/controller-gen" --version >/dev/null
  touch "$dir/.complete"
  log "controller-gen: done"
}

# One builder at a time per cache directory: several checkouts (or parallel test binaries)
# share the cache, and a second builder would remove the first one's unfinished directory.
# The directories that earlier copies of this script build share the lock they take,
# $CACHE/.lock; a directory only this version builds (the Kubernetes set with kubelet) has its
# own, so building it does not hold up checkouts that only need their complete caches. The
# lock is taken per component, not for the whole run, for the same reason.
locked() {
  local lockfile=$1; shift
  exec 8>"$lockfile"
  if ! flock -n 8; then
    log "another build is filling $CACHE ($(basename "$lockfile")); waiting for it"
    flock 8
  fi
  "$@"
  exec 8>&-
}
k8s() { locked "$K8S_DIR.lock" build_k8s; }
etcd() { locked "$CACHE/.lock" build_etcd; }
kwok() { locked "$CACHE/.lock" build_kwok; }
prometheus() { locked "$CACHE/.lock" build_prometheus; }
controller_gen() { locked "$CACHE/.lock" build_controller_gen; }
traefik() { locked "$CACHE/traefik-$TRAEFIK_VERSION.lock" build_traefik; }
helm() { locked "$CACHE/helm-$HELM_VERSION.lock" build_helm; }
cert_manager() { locked "$CERT_MANAGER_DIR.lock" build_cert_manager; }

build_traefik() {
  local dir=$CACHE/traefik-$TRAEFIK_VERSION src
  [ -f "$dir/.complete" ] && return 0
  log "traefik $TRAEFIK_VERSION: building from a copy of its module source (10-20 minutes on 2 cores)"
  rm -rf "$dir"; mkdir -p "$dir/bin"
  # `go install module@version` refuses a module whose go.mod has replace lines; building
  # inside a copy of the module honours them, and its go.sum checks every dependency.
  src=$(cd "$dir" && go mod download -json "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  cp -r "$src" "$dir/src"; chmod -R u+w "$dir/src"
  (cd "$dir/src" && CGO_ENABLED=0 with_heartbeat "go build traefik" \
    go build -trimpath -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
    -o "$dir/bin/traefik" ./cmd/traefik)
  "$dir/bin/traefik" version | grep -q "$TRAEFIK_VERSION"
  rm -rf "$dir/src"
  touch "$dir/.complete"
  log "traefik $TRAEFIK_VERSION: done"
}

build_helm() {
  local dir=$CACHE/helm-$HELM_VERSION
  [ -f "$dir/.complete" ] && return 0
  log "helm $HELM_VERSION: building (cold: 2.5 minutes measured on 2 cores with empty Go caches)"
  rm -rf "$dir"; mkdir -p "$dir/bin"
  # The version string is set by the linker, as Helm's own Makefile does; without it a build
  # reports only "v4.3", and the check below could not tell which release was built.
  CGO_ENABLED=0 GOBIN="$dir/bin" with_heartbeat "go install helm" \
    go install -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
  "$dir/bin/helm" version --template '{{.Version}}' | grep -qx "$HELM_VERSION"
  touch "$dir/.complete"
  log "helm $HELM_VERSION: done"
}

# cert-manager's binaries are separate Go modules the proxy does not serve, so the local
# environment builds its own small main over the library (hack/cert-manager/: a `controller`
# and a `cainjector` subcommand; its go.mod and go.sum pin the module and every dependency).
# The cache directory carries a hash of that source, so a changed main is rebuilt.
CERT_MANAGER_SRC=$here/cert-manager
CERT_MANAGER_DIR=$CACHE/cert-manager-$CERT_MANAGER_VERSION-$(cat "$CERT_MANAGER_SRC"/go.mod \
  "$CERT_MANAGER_SRC"/go.sum "$CERT_MANAGER_SRC"/*.go | sha256sum | cut -c1-8)
build_cert_manager() {
  local dir=$CERT_MANAGER_DIR
  [ -f "$dir/.complete" ] && return 0
  grep -q "github.com/cert-manager/cert-manager $CERT_MANAGER_VERSION\$" "$CERT_MANAGER_SRC/go.mod" ||
    { log "hack/cert-manager/go.mod does not require cert-manager $CERT_MANAGER_VERSION (versions.env)"; return 1; }
  log "cert-manager $CERT_MANAGER_VERSION: building hack/cert-manager (cold: about 9 minutes measured on 2 busy cores)"
  rm -rf "$dir"; mkdir -p "$dir/bin"
  # -mod=readonly: go.sum must already hold every checksum; nothing is resolved anew here.
  (cd "$CERT_MANAGER_SRC" && CGO_ENABLED=0 with_heartbeat "go build cert-manager" \
    go build -mod=readonly -trimpath -ldflags "-s -w" -o "$dir/bin/cert-manager" .)
  # The CRDs ship in the same module (deploy/crds); keep a copy beside the binary.
  local src
  src=$(cd "$CERT_MANAGER_SRC" && go list -m -f '{{.Dir}}' github.com/cert-manager/cert-manager)
  mkdir -p "$dir/crds"
  cp "$src"/deploy/crds/*.yaml "$dir/crds/"; chmod u+w "$dir"/crds/*.yaml
  # Without a subcommand it prints its usage (and exits 2): a binary that runs at all.
  { "$dir/bin/cert-manager" 2>&1 || true; } | grep -q "usage: .* controller|cainjector"
  touch "$dir/.complete"
  log "cert-manager $CERT_MANAGER_VERSION: done"
}

what=${1:-all}
case $what in
  all) prometheus; kwok; etcd; k8s; controller_gen ;;
  k8s) k8s ;;
  etcd) etcd ;;
  kwok) kwok ;;
  prometheus) prometheus ;;
  controller-gen) controller_gen ;;
  traefik) traefik ;;
  helm) helm; echo "$CACHE/helm-$HELM_VERSION/bin" ;;
  cert-manager) cert_manager; echo "$CERT_MANAGER_DIR/bin" ;;
  *) echo "usage: $0 [all|k8s|etcd|kwok|prometheus|controller-gen|traefik|helm|cert-manager]" >&2; exit 2 ;;
esac
[ "$what" = all ] && log "all components ready in $CACHE"
exit 0
