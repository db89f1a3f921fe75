#!/usr/bin/env bash
# Serin on the local cluster: builds the binary, makes its certificates, runs
# `serin webhook` on 127.0.0.1 and registers the webhook configurations from
# manifests/webhook.yaml with `url:` and the local CA in place of the Service reference.
#
#   hack/serin.sh up | down
# State and log: .serin/serin/. Restarts Serin when the binary is newer than the process.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
S=$STATE/serin
BIN=$ROOT/target/debug/serin
kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$STATE/cluster/kubeconfig" "$@"; }
ready() { curl -fsS "http://127.0.0.1:$(cat "$S/admin-port")/readyz"; }

# The webhook configurations as in manifests/, pointed at the local listener.
register() {
  local port=$1 bundle
  bundle=$(base64 -w0 <"$S/certs/ca.crt")
  kubectl create --dry-run=client -o json -f "$ROOT/manifests/webhook.yaml" |
    python3 -c '
import json, sys
port, bundle = sys.argv[1], sys.argv[2]
text, docs, at = sys.stdin.read(), [], 0
decoder = json.JSONDecoder()
while text[at:].strip():
    doc, end = decoder.raw_decode(text[at:].lstrip())
    at = len(text) - len(text[at:].lstrip()) + end
    docs.extend(doc.get("items", [doc]))
for config in docs:
    for hook in config["webhooks"]:
        path = hook["clientConfig"]["service"]["path"]
        hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": bundle}
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))' "$port" "$bundle" | kubectl apply -f - >/dev/null
  say "registered the webhooks at https://127.0.0.1:$port"
}

up() {
  mkdir -p "$S"
  exec 9>"$S/.lock"; flock 9
  "$ROOT/hack/cluster.sh" up
  say "building serin (cargo build)"
  (cd "$ROOT" && cargo build --locked --quiet --bin serin)
  if alive "$S/serin.pid" && [ "$S/serin.pid" -nt "$BIN" ] && ready >/dev/null 2>&1; then
    register "$(cat "$S/port")"
    say "serin already running (log $S/serin.log)"; return 0
  fi
  stop_pid serin "$S/serin.pid"
  [ -f "$S/certs/tls.key" ] || "$BIN" certs --out-dir "$S/certs" >/dev/null 2>&1
  local port admin; port=$(free_port); admin=$(free_port)
  echo "$port" >"$S/port"; echo "$admin" >"$S/admin-port"
  start_bg serin "$S/serin.pid" "$S/serin.log" "$BIN" webhook \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
    --tls-cert "$S/certs/tls.crt" --tls-key "$S/certs/tls.key"
  wait_for "serin webhook" "$S/serin.log" 30 ready
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

case ${1:-} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
