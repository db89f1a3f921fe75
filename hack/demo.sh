#!/usr/bin/env bash
# `make demo`: brings up the local environment and shows it working, step by step.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Local environment (a cold first run builds Kubernetes from source: 7-20 minutes)"
"$ROOT/hack/cluster.sh" up
"$ROOT/hack/prometheus.sh" up
"$ROOT/hack/serin.sh" up
export KUBECONFIG=$STATE/cluster/kubeconfig
k() { "$K8S_BIN/kubectl" "$@"; }

step "The control plane"
k version 2>/dev/null | sed 's/^/  /'
k get nodes -o wide | sed 's/^/  /'

step "A Deployment rolls out for real: ReplicaSet, scheduled Pods, made Ready by kwok"
k create namespace serin-demo --dry-run=client -o yaml | k apply -f - >/dev/null
k -n serin-demo apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: podinfo}
spec:
  replicas: 3
  selector: {matchLabels: {app: podinfo}}
  template:
    metadata: {labels: {app: podinfo}}
    spec:
      containers:
      - {name: podinfo, image: ghcr.io/stefanprodan/podinfo:6.7.0, ports: [{containerPort: 9898, name: http}]}
YAML
k -n serin-demo rollout status deployment/podinfo --timeout=90s
k -n serin-demo get deployment,replicaset,pods -o wide | sed 's/^/  /'

step "Opting in with a mistake or three: Serin refuses it at apply time, naming each"
bad=$(k -n serin-demo get deployment podinfo -o json | python3 -c '
import json, sys
d = json.load(sys.stdin)
d["metadata"] = {"name": "podinfo", "namespace": "serin-demo", "annotations": {
    "serin.dev/enabled": "true", "serin.dev/step-weight": "0",
    "serin.dev/provider": "istio", "serin.dev/intervall": "30s"}}
d.pop("status", None)
print(json.dumps(d))')
echo "$bad" | k apply -f - 2>&1 | sed -n 's/.*\(admission webhook\)/\1/; /admission webhook/,$p' | sed 's/^/  /' || true

step "Opting in correctly: the defaults become explicit annotations"
echo "$bad" | python3 -c '
import json, sys
d = json.load(sys.stdin)
d["metadata"]["annotations"] = {"serin.dev/enabled": "true", "serin.dev/step-weight": "20"}
print(json.dumps(d))' | k apply -f - | sed 's/^/  /'
k -n serin-demo get deployment podinfo -o json | python3 -c '
import json, sys
for k, v in sorted(json.load(sys.stdin)["metadata"]["annotations"].items()):
    if k.startswith("serin.dev/"): print(f"  {k}: {v}")'

step "Prometheus"
url=$(cat "$STATE/prometheus/url")
printf '  %s: ' "$url"; curl -fsS "$url/api/v1/status/buildinfo" | python3 -c 'import json,sys; print("Prometheus", json.load(sys.stdin)["data"]["version"], "ready")'

step "Done. KUBECONFIG=$KUBECONFIG; 'make down' stops everything."
