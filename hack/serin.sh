#!/usr/bin/env bash
# Serin on the local cluster: installs the CRDs (hack/crds.sh), Serin's RBAC
# (manifests/rbac.yaml, plus the Secrets grant of manifests/overlays/secret-tracking, as the
# local Serin tracks Secrets, and the grant of manifests/overlays/alerts), the admission policy that keeps its writes to its own objects
# (manifests/boundary.yaml) and the roles for `view`/`edit` users (manifests/user-roles.yaml),
# makes a kubeconfig for the `serin` ServiceAccount, builds the
# binary and its certificates, runs `serin run` on 127.0.0.1 under that ServiceAccount's
# identity (not the admin credentials), and registers the webhook configurations from
# manifests/webhook.yaml with `url:` and the local CA in place of the Service reference (and
# points the conversion webhook of Serin's CRDs at the same listener).
#
#   hack/serin.sh up | restart | down     (restart: a fresh process even when current)
# State and log: .serin/serin/ (kubeconfig: .serin/serin/kubeconfig); the kubectl plugin
# symlink: .serin/plugins/kubectl-serin (put .serin/plugins on PATH). Restarts Serin when
# the binary is newer than the process, or the cluster or Prometheus was restarted since.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
S=$STATE/serin
# SERIN_PROFILE=release runs an optimized build (the scale bench does); debug otherwise.
PROFILE=${SERIN_PROFILE:-debug}
case $PROFILE in
  debug) BIN=$ROOT/target/debug/serin; BUILD=(cargo build --locked --quiet "${SERIN_FEATURES[@]}" --bin serin) ;;
  release) BIN=$ROOT/target/release/serin; BUILD=(cargo build --locked --quiet --release "${SERIN_FEATURES[@]}" --bin serin) ;;
  *) echo "SERIN_PROFILE must be debug or release, not $PROFILE" >&2; exit 2 ;;
esac
kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$STATE/cluster/kubeconfig" "$@"; }
ready() { curl -fsS "http://127.0.0.1:$(cat "$S/admin-port")/readyz"; }
SA_USER=system:serviceaccount:serin-system:serin
# Lifetime of the ServiceAccount token; every `up` makes a new one, and Serin rereads the
# token file within a minute.
TOKEN_DURATION=48h

# Serin's own kubeconfig: the cluster's server and CA from the admin kubeconfig, and a fresh
# token of the `serin` ServiceAccount in a token file (written atomically, so a running
# Serin picks it up without a restart).
sa_kubeconfig() {
  local server ca token
  server=$(kubectl config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.server}')
  ca=$(kubectl config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  token=$(kubectl create token serin -n serin-system --duration="$TOKEN_DURATION")
  (
    umask 077
    printf '%s' "$token" >"$S/token.tmp"; mv "$S/token.tmp" "$S/token"
    cat >"$S/kubeconfig.tmp" <<KC
apiVersion: v1
kind: Config
clusters:
- name: serin-local
  cluster:
    server: $server
    certificate-authority-data: $ca
users:
- name: serin
  user:
    tokenFile: $S/token
contexts:
- name: serin
  context: {cluster: serin-local, user: serin, namespace: serin-system}
current-context: serin
KC
    mv "$S/kubeconfig.tmp" "$S/kubeconfig"
  )
  local whoami
  whoami=$("$K8S_BIN/kubectl" --kubeconfig "$S/kubeconfig" auth whoami -o jsonpath='{.status.userInfo.username}') ||
    die "the token in $S/kubeconfig is not accepted (read $STATE/cluster/kube-apiserver.log)"
  [ "$whoami" = "$SA_USER" ] || die "$S/kubeconfig authenticates as $whoami, not $SA_USER"
  say "kubeconfig for $SA_USER: $S/kubeconfig (token valid $TOKEN_DURATION)"
}

# The running Serin is current: started after the binary was built and after the cluster
# and Prometheus it talks to were (re)started, and ready.
current() {
  alive "$S/serin.pid" && [ "$(cat "$S/profile" 2>/dev/null)" = "$PROFILE" ] &&
    [ "$S/serin.pid" -nt "$BIN" ] &&
    [ "$S/serin.pid" -nt "$STATE/cluster/kubeconfig" ] &&
    [ "$S/serin.pid" -nt "$STATE/prometheus/url" ] && ready >/dev/null 2>&1
}

# The webhook configurations as in manifests/, pointed at the local listener.
register() {
  local port=$1 bundle
  bundle=$(base64 -w0 <"$S/certs/ca.crt")
  kubectl create --dry-run=client -o json -f "$ROOT/manifests/webhook.yaml" | json_items |
    python3 -c '
import json, sys
port, bundle = sys.argv[1], sys.argv[2]
docs = json.load(sys.stdin)
for config in docs:
    for hook in config["webhooks"]:
        path = hook["clientConfig"]["service"]["path"]
        hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": bundle}
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))' "$port" "$bundle" | kubectl apply -f - >/dev/null
  # The CRDs' conversion webhook: the same listener, path /convert.
  local crd patch
  patch=$(printf '{"spec":{"conversion":{"webhook":{"clientConfig":{"service":null,"url":"https://127.0.0.1:%s/convert","caBundle":"%s"}}}}}' "$port" "$bundle")
  for crd in canaries analysistemplates canarypolicies; do
    kubectl patch crd "$crd.serin.dev" --type merge -p "$patch" >/dev/null
  done
  say "registered the webhooks and CRD conversion at https://127.0.0.1:$port"
}

up() {
  mkdir -p "$S"
  exec 9>"$S/.lock"; flock 9
  "$ROOT/hack/cluster.sh" up
  # `make up` after `make in-cluster` returns to the host's Serin: one Serin at a time.
  if [ -d "$STATE/in-cluster" ] && "$ROOT/hack/in-cluster.sh" status; then
    say "Serin runs in the cluster (make in-cluster): removing it to run Serin on the host"
    "$ROOT/hack/in-cluster.sh" down
  fi
  "$ROOT/hack/crds.sh" up
  kubectl apply -f "$ROOT/manifests/rbac.yaml" >/dev/null
  # The local Serin tracks Secrets (the binary's default), so it gets the Component's grant.
  kubectl apply -f "$ROOT/manifests/overlays/secret-tracking/rbac.yaml" >/dev/null
  # Chat alerts read their Secrets in serin-system.
  kubectl apply -f "$ROOT/manifests/overlays/alerts/rbac.yaml" >/dev/null
  # What Serin's identity may write (the API server enforces it, also while Serin is down),
  # and what people bound to view/edit may do with Serin's objects.
  kubectl apply -f "$ROOT/manifests/boundary.yaml" -f "$ROOT/manifests/require-canary.yaml" \
    -f "$ROOT/manifests/user-roles.yaml" >/dev/null
  sa_kubeconfig
  "$ROOT/hack/prometheus.sh" up
  say "building serin (${BUILD[*]})"
  (cd "$ROOT" && "${BUILD[@]}")
  # The kubectl plugin is the same binary under the name kubectl looks for on PATH. Not in
  # .serin/bin, which is the shared cache of Kubernetes binaries.
  mkdir -p "$STATE/plugins"
  ln -sfn "$BIN" "$STATE/plugins/kubectl-serin"
  if [ -z "${FORCE_RESTART:-}" ] && current; then
    register "$(cat "$S/port")"
    say "serin already running (log $S/serin.log)"; return 0
  fi
  stop_pid serin "$S/serin.pid"
  [ -f "$S/certs/tls.key" ] || "$BIN" certs --out-dir "$S/certs" >/dev/null 2>&1
  # Earlier processes' logs are kept for `audit` (a restart truncates serin.log).
  if [ -s "$S/serin.log" ]; then cat "$S/serin.log" >>"$S/serin-history.log"; fi
  local port admin; port=$(free_port); admin=$(free_port)
  echo "$port" >"$S/port"; echo "$admin" >"$S/admin-port"; echo "$PROFILE" >"$S/profile"
  start_bg serin "$S/serin.pid" "$S/serin.log" "$BIN" run \
    --kubeconfig "$S/kubeconfig" --prometheus-url "$("$ROOT/hack/prometheus.sh" url)" \
    --service-account "$SA_USER" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --tls-cert "$S/certs/tls.crt" --tls-key "$S/certs/tls.key"
  wait_for "serin" "$S/serin.log" 30 ready
  register "$port"
}

down() {
  [ -d "$S" ] || return 0
  exec 9>"$S/.lock"; flock 9
  # Unregister first: with failurePolicy Fail, a registered webhook that is gone would
  # refuse every write of an annotated Deployment.
  if "$ROOT/hack/cluster.sh" status; then
    kubectl delete mutatingwebhookconfiguration/serin validatingwebhookconfiguration/serin \
      --ignore-not-found >/dev/null
  fi
  stop_pid serin "$S/serin.pid"
}

# audit reset | check: what RBAC refused the host's Serin since `reset` (the authorizer's
# "... is forbidden: User ... cannot ..."; not other 403s, such as writes into a namespace
# being deleted, which the tests' clean-up causes). It runs as
# the `serin` ServiceAccount with the shipped RBAC (rbac.yaml and the secret-tracking and
# alerts Components' grants); `make test-e2e` fails when any release path met a Forbidden.
audit() {
  case ${1:-} in
    reset)
      mkdir -p "$S"; : >"$S/serin-history.log"
      [ -f "$S/serin.log" ] && wc -l <"$S/serin.log" >"$S/audit-from" || echo 0 >"$S/audit-from" ;;
    check)
      local from lines
      from=$(cat "$S/audit-from" 2>/dev/null || echo 0)
      lines=$( { cat "$S/serin-history.log" 2>/dev/null; tail -n "+$(( from + 1 ))" "$S/serin.log" 2>/dev/null; } |
        grep -F 'forbidden: User' || true)
      if [ -n "$lines" ]; then
        say "the API server refused Serin's identity (shipped RBAC) during the tests:"
        printf '%s\n' "$lines" | head -n 20 >&2
        die "$(printf '%s\n' "$lines" | wc -l) Forbidden answer(s) in Serin's log ($S/serin.log, serin-history.log)"
      fi
      say "no Forbidden answer in Serin's log since the audit began" ;;
    *) echo "usage: $0 audit reset|check" >&2; exit 2 ;;
  esac
}

case ${1:-} in
  audit) audit "${2:-}" ;;
  up) up ;;
  restart) FORCE_RESTART=1 up ;;
  down) down ;;
  *) echo "usage: $0 up|restart|down|audit reset|check" >&2; exit 2 ;;
esac
