#!/usr/bin/env bash
# `make demo`: the local environment, Serin, and two releases of one Deployment shown as they
# happen: a good version promoted, then a bad one rolled back.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
NS=serin-demo

step "Local environment (a cold first run builds Kubernetes from source: 7-20 minutes)"
"$ROOT/hack/cluster.sh" up
"$ROOT/hack/prometheus.sh" up
"$ROOT/hack/serin.sh" up
"$ROOT/hack/simulator.sh" up
export KUBECONFIG=$STATE/cluster/kubeconfig
k() { "$K8S_BIN/kubectl" "$@"; }

# podinfo VERSION ERROR_RATE LATENCY_MS [ANNOTATIONS...]: the sample Deployment as YAML.
podinfo() {
  local version=$1 errors=$2 latency=$3; shift 3
  cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
  namespace: $NS
  annotations:
$(for a in "$@"; do echo "    $a"; done)
spec:
  replicas: 3
  selector: {matchLabels: {app: podinfo}}
  template:
    metadata:
      labels: {app: podinfo}
      annotations: {simulate.serin.dev/error-rate: "$errors", simulate.serin.dev/latency-ms: "$latency"}
    spec:
      containers:
      - {name: podinfo, image: "ghcr.io/stefanprodan/podinfo:$version", ports: [{containerPort: 9898, name: http}]}
YAML
}
SETTINGS=('serin.dev/enabled: "true"' 'serin.dev/interval: 3s' 'serin.dev/step-weight: "20"'
  'serin.dev/max-weight: "60"' 'serin.dev/threshold: "3"' 'serin.dev/metrics-window: 10s')

# watch_release TIMEOUT: one line per change of phase, weight or measured values, until the
# release ends (Succeeded or Failed).
watch_release() {
  local deadline=$(( $(date +%s) + $1 )) start; start=$(date +%s)
  local last="" line phase
  while [ "$(date +%s)" -lt "$deadline" ]; do
    line=$(k -n $NS get canary podinfo -o json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin).get("status", {})
checks = {c["name"]: c.get("value") for c in s.get("lastChecks", [])}
def show(name, unit):
    v = checks.get(name)
    return "-" if v is None else "%.1f%s" % (v, unit)
print("%-17s weight %3d%%   success rate %7s   p99 %8s   failed checks %d" % (
    s.get("phase", "?"), s.get("canaryWeight", 0), show("request-success-rate", "%"),
    show("request-duration", "ms"), s.get("failedChecks", 0)))' || echo "waiting for the Canary")
    if [ "$line" != "$last" ]; then
      printf '  [%3ds] %s\n' $(( $(date +%s) - start )) "$line"
      last=$line
    fi
    phase=${line%% *}
    case $phase in Succeeded|Failed) [ "$(date +%s)" -gt $(( start + 3 )) ] && return 0 ;; esac
    sleep 1
  done
  say "error: the release did not finish within $1 s"; return 1
}

step "A fresh namespace"
k delete namespace $NS --ignore-not-found --wait=true >/dev/null
k create namespace $NS >/dev/null

step "A Deployment you already run: podinfo 6.7.0, 3 replicas (made Ready by kwok)"
podinfo 6.7.0 0 30 'app.kubernetes.io/part-of: demo' | k apply -f - | sed 's/^/  /'
k -n $NS rollout status deployment/podinfo --timeout=90s | sed 's/^/  /'

step "Opting in with mistakes: Serin refuses the change at apply time, naming each"
podinfo 6.7.0 0 30 'serin.dev/enabled: "true"' 'serin.dev/step-weight: "0"' \
  'serin.dev/provider: istio' 'serin.dev/intervall: 30s' |
  k apply -f - 2>&1 | sed -n 's/.*\(admission webhook\)/\1/; /admission webhook/,$p' | sed 's/^/  /' || true

step "Opting in correctly: the webhook creates the primary at once (kubectl prints it), the controller the rest"
podinfo 6.7.0 0 30 "${SETTINGS[@]}" | k apply -f - 2>&1 | sed 's/^/  /'
k -n $NS wait canary/podinfo --for=jsonpath='{.status.phase}'=Initialized --timeout=90s >/dev/null
k -n $NS get deployments,services,trafficsplits,canaries | sed 's/^/  /'

step "Release 6.7.1 (healthy: no errors, 30 ms): shifted 20% at a time, checked every 3 s"
podinfo 6.7.1 0 30 "${SETTINGS[@]}" | k apply -f - | sed 's/^/  /'
watch_release 180
echo "  primary now runs: $(k -n $NS get deployment podinfo-primary -o jsonpath='{.spec.template.spec.containers[0].image}')"

step "Release 6.8.0 (broken: 25% of requests fail): rolled back after 3 failed checks"
podinfo 6.8.0 0.25 30 "${SETTINGS[@]}" | k apply -f - | sed 's/^/  /'
watch_release 180
echo "  primary still runs: $(k -n $NS get deployment podinfo-primary -o jsonpath='{.spec.template.spec.containers[0].image}')"

step "What Serin recorded (kubectl get events)"
k -n $NS get events --field-selector involvedObject.kind=Deployment,involvedObject.name=podinfo \
  --sort-by=.metadata.creationTimestamp -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message 2>/dev/null |
  cut -c1-160 | sed 's/^/  /'

step "Done. KUBECONFIG=$KUBECONFIG; 'make down' stops everything."
