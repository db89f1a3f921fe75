#!/usr/bin/env bash
# `make demo`: the local environment, Serin, and two releases of one Deployment shown as they
# happen: a good version promoted, then a bad one rolled back. Each release's timeline (phase,
# canary weight, success rate, p99, failed checks, about once a second) is recorded as JSON
# lines and drawn as an SVG chart (`serin demo-chart`), both under .serin/demo/.
#
#   DEMO_SHORT=1        fewer steps and shorter intervals (what tests/e2e_demo.rs runs)
#   DEMO_NAMESPACE=NS   the namespace to use (recreated; default serin-demo)
#   DEMO_OUT=DIR        where timelines and charts go (default .serin/demo)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
NS=${DEMO_NAMESPACE:-serin-demo}
OUT=${DEMO_OUT:-$STATE/demo}
SERIN=$ROOT/target/${SERIN_PROFILE:-debug}/serin # built by hack/serin.sh up
# The release settings; the limits are also recorded with every sample, for the charts.
MIN_SUCCESS_RATE=99 MAX_P99_MS=500
if [ "${DEMO_SHORT:-0}" = 1 ]; then
  INTERVAL=2 STEP=30 MAX_WEIGHT=60 THRESHOLD=3 WINDOW=5s POLL=0.5 REPLICAS=1
else
  INTERVAL=3 STEP=20 MAX_WEIGHT=60 THRESHOLD=3 WINDOW=10s POLL=1 REPLICAS=3
fi

step "Local environment (a cold first run builds Kubernetes from source: 7-20 minutes)"
mkdir -p "$OUT"
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
  replicas: $REPLICAS
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
SETTINGS=('serin.dev/enabled: "true"' "serin.dev/interval: ${INTERVAL}s"
  "serin.dev/step-weight: \"$STEP\"" "serin.dev/max-weight: \"$MAX_WEIGHT\""
  "serin.dev/threshold: \"$THRESHOLD\"" "serin.dev/metrics-window: $WINDOW"
  "serin.dev/success-rate: \"$MIN_SUCCESS_RATE\"" "serin.dev/latency: ${MAX_P99_MS}ms")

# sample TIMELINE START BEFORE: reads the Canary (JSON) on stdin and prints "SECONDS<TAB>LINE"
# for the live view. Once Serin has taken up the new revision (status.revision is no longer
# BEFORE, the one from before the apply), the line starts with the phase and the sample is
# appended to TIMELINE as one JSON object; START is when the new version was applied.
SAMPLE='
import datetime, json, sys, time
timeline, start, before = sys.argv[1], float(sys.argv[2]), sys.argv[3]
now = time.time()
elapsed = now - start
try:
    status = json.load(sys.stdin).get("status") or {}
except ValueError:
    print("%d\twaiting for the Canary" % elapsed)
    sys.exit()
if status.get("revision", "") == before:
    print("%d\twaiting for Serin to take up the new revision" % elapsed)
    sys.exit()
checks = {c["name"]: c.get("value") for c in status.get("lastChecks", [])}
sample = {
    "elapsed": round(elapsed, 2),
    "time": datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat(timespec="seconds"),
    "phase": status.get("phase", "Initializing"),
    "canaryWeight": status.get("canaryWeight", 0),
    "successRate": checks.get("request-success-rate"),
    "p99Ms": checks.get("request-duration"),
    "failedChecks": status.get("failedChecks", 0),
    "minSuccessRate": float(sys.argv[4]),
    "maxP99Ms": float(sys.argv[5]),
}
with open(timeline, "a") as out:
    out.write(json.dumps(sample) + "\n")
def show(value, unit):
    return "-" if value is None else "%.1f%s" % (value, unit)
print("%d\t%-17s weight %3d%%   success rate %7s   p99 %8s   failed checks %d" % (
    elapsed, sample["phase"], sample["canaryWeight"], show(sample["successRate"], "%"),
    show(sample["p99Ms"], "ms"), sample["failedChecks"]))
'

# release VERSION ERROR_RATE LATENCY_MS TITLE TIMEOUT: applies the version and shows one line
# per change of phase, weight or measured values until the release ends (Succeeded or
# Failed), recording every sample in .serin/demo/podinfo-VERSION.jsonl; then draws the chart.
release() {
  local version=$1 errors=$2 latency=$3 title=$4 timeout=$5
  local timeline=$OUT/podinfo-$version.jsonl chart=$OUT/podinfo-$version.svg
  local before start deadline last="" out seconds line outcome=""
  before=$(k -n "$NS" get canary podinfo -o jsonpath='{.status.revision}')
  : >"$timeline"
  start=$(date +%s.%N)
  deadline=$(( $(date +%s) + timeout ))
  podinfo "$version" "$errors" "$latency" "${SETTINGS[@]}" | k apply -f - | sed 's/^/  /'
  while [ "$(date +%s)" -lt "$deadline" ]; do
    out=$(k -n "$NS" get canary podinfo -o json 2>/dev/null |
      python3 -c "$SAMPLE" "$timeline" "$start" "$before" "$MIN_SUCCESS_RATE" "$MAX_P99_MS" || true)
    IFS=$'\t' read -r seconds line <<<"$out"
    if [ "$line" != "$last" ]; then
      printf '  [%3ds] %s\n' "$seconds" "$line"
      last=$line
    fi
    case ${line%% *} in Succeeded|Failed) outcome=${line%% *}; break ;; esac
    sleep "$POLL"
  done
  "$SERIN" demo-chart --timeline "$timeline" --out "$chart" --title "podinfo $version: $title"
  CHARTS+=("$chart")
  [ -n "$outcome" ] || die "the release of $version did not finish within $timeout s (chart so far: $chart)"
}
CHARTS=()

step "A fresh namespace"
k delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
k create namespace "$NS" >/dev/null

step "A Deployment you already run: podinfo 6.7.0, $REPLICAS replicas (made Ready by kwok)"
podinfo 6.7.0 0 30 'app.kubernetes.io/part-of: demo' | k apply -f - | sed 's/^/  /'
k -n "$NS" rollout status deployment/podinfo --timeout=90s | sed 's/^/  /'

step "Opting in with mistakes: Serin refuses the change at apply time, naming each"
podinfo 6.7.0 0 30 'serin.dev/enabled: "true"' 'serin.dev/step-weight: "0"' \
  'serin.dev/provider: istio' 'serin.dev/intervall: 30s' |
  k apply -f - 2>&1 | sed -n 's/.*\(admission webhook\)/\1/; /admission webhook/,$p' | sed 's/^/  /' || true

step "Opting in correctly: the webhook creates the primary at once (kubectl prints it), the controller the rest"
podinfo 6.7.0 0 30 "${SETTINGS[@]}" | k apply -f - 2>&1 | sed 's/^/  /'
k -n "$NS" wait canary/podinfo --for=jsonpath='{.status.phase}'=Initialized --timeout=90s >/dev/null
k -n "$NS" get deployments,services,trafficsplits,canaries | sed 's/^/  /'

step "Release 6.7.1 (healthy: no errors, 30 ms): shifted $STEP% at a time, checked every $INTERVAL s"
release 6.7.1 0 30 "healthy (no errors, 30 ms)" 180
echo "  primary now runs: $(k -n "$NS" get deployment podinfo-primary -o jsonpath='{.spec.template.spec.containers[0].image}')"

step "Release 6.8.0 (broken: 25% of requests fail): rolled back after $THRESHOLD failed checks"
release 6.8.0 0.25 30 "broken (25% of requests fail)" 180
echo "  primary still runs: $(k -n "$NS" get deployment podinfo-primary -o jsonpath='{.spec.template.spec.containers[0].image}')"

step "What Serin recorded (kubectl get events)"
k -n "$NS" get events --field-selector involvedObject.kind=Deployment,involvedObject.name=podinfo \
  --sort-by=.metadata.creationTimestamp -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message 2>/dev/null |
  cut -c1-160 | sed 's/^/  /'

step "Timeline charts, one per release (open them in a browser)"
for chart in "${CHARTS[@]}"; do echo "  $chart"; done

step "Done. KUBECONFIG=$KUBECONFIG; 'make down' stops everything."
