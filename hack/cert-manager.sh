#!/usr/bin/env bash
# cert-manager on the local cluster (issue 17): its CRDs from the Go module
# github.com/cert-manager/cert-manager (CERT_MANAGER_VERSION, deploy/crds, unchanged) and two
# host processes of our own build of its library (hack/cert-manager/, built by
# `hack/deps.sh cert-manager`), both with the admin kubeconfig:
#
#   controller   Certificates, Issuers/ClusterIssuers, the CertificateRequest approver and the
#                SelfSigned and CA signers (no ACME, Vault, Venafi or Ingress/Gateway shims)
#   cainjector   copies the CA of the Certificate named by cert-manager.io/inject-ca-from into
#                Validating/MutatingWebhookConfigurations and CRDs' conversion settings
#
# Why on the host: as Traefik (hack/traefik.sh), it only talks to the API server, which the
# host reaches on loopback; no pod could (there is no kube-proxy). No leader election (one
# process each); metrics on loopback ports only. No webhook of cert-manager's own runs, so
# nothing checks a Certificate beyond the CRDs' schemas.
#
#   hack/cert-manager.sh up | down | status
#
# `up` writes .serin/cert-manager/cert-manager.env:
#   CERT_MANAGER_VERSION     the module version the processes were built from
#   CERT_MANAGER_METRICS     http://127.0.0.1:PORT/metrics of the controller
#   CAINJECTOR_METRICS       http://127.0.0.1:PORT/metrics of the cainjector
set -euo pipefail
source "$(dirname "$0")/lib.sh"
C=$STATE/cert-manager
KUBECONFIG_FILE=$STATE/cluster/kubeconfig
# The namespace of the Secrets ClusterIssuers read (cert-manager's default).
CLUSTER_RESOURCE_NAMESPACE=cert-manager
PROCESSES="controller cainjector"
kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
metrics_up() { curl -fsS -o /dev/null "http://127.0.0.1:$(cat "$C/$1.metrics-port")/metrics"; }
started() { grep -q 'controllers started' "$C/controller.log"; }

# running NAME: the process is alive, started after the cluster, this script and the binary it
# runs were last changed, and answers on its metrics port.
running() {
  alive "$C/$1.pid" && [ "$C/$1.pid" -nt "$KUBECONFIG_FILE" ] && [ "$C/$1.pid" -nt "$0" ] &&
    [ "$(cat "$C/$1.bin" 2>/dev/null)" = "$BIN" ] && [ "$C/$1.pid" -nt "$BIN" ] &&
    metrics_up "$1" >/dev/null 2>&1
}

apply_crds() {
  say "applying cert-manager $CERT_MANAGER_VERSION CRDs (deploy/crds of the module)"
  kubectl apply --server-side --force-conflicts --field-manager=serin-local \
    -f "$CRDS" >/dev/null
  kubectl wait --for=condition=Established --timeout=60s \
    crd/certificates.cert-manager.io crd/certificaterequests.cert-manager.io \
    crd/issuers.cert-manager.io crd/clusterissuers.cert-manager.io \
    crd/orders.acme.cert-manager.io crd/challenges.acme.cert-manager.io >/dev/null
  kubectl create namespace "$CLUSTER_RESOURCE_NAMESPACE" --dry-run=client -o yaml |
    kubectl apply --server-side --field-manager=serin-local -f - >/dev/null
}

start() {
  local name=$1 port
  stop_pid "cert-manager $name" "$C/$name.pid"
  port=$(free_port)
  echo "$port" >"$C/$name.metrics-port"
  echo "$BIN" >"$C/$name.bin"
  start_bg "cert-manager $name" "$C/$name.pid" "$C/$name.log" "$BIN" "$name" \
    --kubeconfig "$KUBECONFIG_FILE" --metrics-address "127.0.0.1:$port" \
    --cluster-resource-namespace "$CLUSTER_RESOURCE_NAMESPACE"
}

write_env() {
  cat >"$C/cert-manager.env.tmp" <<ENV
CERT_MANAGER_VERSION=$CERT_MANAGER_VERSION
CERT_MANAGER_METRICS=http://127.0.0.1:$(cat "$C/controller.metrics-port")/metrics
CAINJECTOR_METRICS=http://127.0.0.1:$(cat "$C/cainjector.metrics-port")/metrics
ENV
  mv "$C/cert-manager.env.tmp" "$C/cert-manager.env"
}

up() {
  mkdir -p "$C"
  exec 9>"$C/.lock"; flock 9
  # Idempotent: returns at once when the cluster runs (a kubeconfig left by `down` is no sign).
  "$ROOT/hack/cluster.sh" up
  local bindir
  bindir=$("$ROOT/hack/deps.sh" cert-manager)
  BIN=$bindir/cert-manager
  CRDS=$bindir/../crds
  apply_crds
  local name
  for name in $PROCESSES; do
    if running "$name"; then
      say "cert-manager $name already running (pid $(cat "$C/$name.pid"), log $C/$name.log)"
      continue
    fi
    start "$name"
  done
  for name in $PROCESSES; do
    wait_for "cert-manager $name" "$C/$name.log" 60 metrics_up "$name"
  done
  wait_for "cert-manager's controllers to start" "$C/controller.log" 60 started
  write_env
  say "cert-manager $CERT_MANAGER_VERSION up: controller (pid $(cat "$C/controller.pid")) and cainjector (pid $(cat "$C/cainjector.pid")), logs in $C"
}

down() {
  [ -d "$C" ] || return 0
  exec 9>"$C/.lock"; flock 9
  rm -f "$C/cert-manager.env"
  local name
  for name in $PROCESSES; do
    stop_pid "cert-manager $name" "$C/$name.pid"
    rm -f "$C/$name.metrics-port" "$C/$name.bin"
  done
}

status() {
  local name rc=0
  for name in $PROCESSES; do
    if alive "$C/$name.pid"; then
      printf '%s: running, pid %s, RSS %s kB, log %s\n' "$name" "$(cat "$C/$name.pid")" \
        "$(awk '/^VmRSS:/ {print $2}' "/proc/$(cat "$C/$name.pid")/status")" "$C/$name.log"
    else
      printf '%s: not running\n' "$name"; rc=1
    fi
  done
  return $rc
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
