#!/usr/bin/env bash
# `make demo`: the local environment, Serin, and two releases of one Deployment shown as they
# happen: a good version promoted, then a bad one rolled back. Each release's timeline (phase,
# canary weight, success rate, p99, failed checks, about once a second) is recorded as JSON
# lines and drawn as an SVG chart (`serin demo-chart`), both under .serin/demo/.
#
# Two data planes:
#   real       (default) podinfo's real pods on the real node, behind Traefik (Gateway API),
#              loaded by Flagger's load tester running hey; the checks read Traefik's series,
#              and each live line counts the requests the canary's pods answered. Releases
#              are made as users make them, with `kubectl set env`; the bad one turns on
#              podinfo's own random errors.
#   simulated  kwok's fake pods, the SMI/Linkerd provider, and the traffic simulator's
#              series: the providers with no data plane here (Linkerd, NGINX, Gloo) are only
#              ever shown this way.
#
#   DEMO_DATA_PLANE=real|simulated
#   DEMO_SHORT=1        fewer steps and shorter intervals (what tests/e2e_demo.rs runs)
#   DEMO_NAMESPACE=NS   the namespace to use (recreated; default serin-demo)
#   DEMO_OUT=DIR        where timelines and charts go (default .serin/demo)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
NS=${DEMO_NAMESPACE:-serin-demo}
PLANE=${DEMO_DATA_PLANE:-real}
case $PLANE in real|simulated) ;; *) die "DEMO_DATA_PLANE=$PLANE: allowed: real, simulated" ;; esac
OUT=${DEMO_OUT:-$STATE/demo}
SERIN=$ROOT/target/${SERIN_PROFILE:-debug}/serin # built by hack/serin.sh up
# The release settings; the limits are also recorded with every sample, for the charts.
MIN_SUCCESS_RATE=99 MAX_P99_MS=500
if [ "$PLANE" = real ]; then
  # Real requests: each check needs a window with enough of them (the load tester sends
  # 20 per second), and Traefik takes up a new weight within 2 s.
  if [ "${DEMO_SHORT:-0}" = 1 ]; then
    INTERVAL=8 STEP=30 MAX_WEIGHT=60 THRESHOLD=2 WINDOW=15s POLL=0.5 REPLICAS=1
  else
    INTERVAL=10 STEP=20 MAX_WEIGHT=60 THRESHOLD=2 WINDOW=20s POLL=1 REPLICAS=2
  fi
elif [ "${DEMO_SHORT:-0}" = 1 ]; then
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
TRAEFIK_METRICS="" PODINFO_IMAGE="" LOADTESTER_IMAGE="" TRAEFIK_URL="" TRAEFIK_GATEWAY=""
if [ "$PLANE" = real ]; then
  "$ROOT/hack/node.sh" up
  "$ROOT/hack/podtargets.sh" up
  "$ROOT/hack/traefik.sh" up
  # shellcheck source=/dev/null
  source "$STATE/node/node.env"
  # shellcheck source=/dev/null
  source "$STATE/traefik/traefik.env"
fi
export KUBECONFIG=$STATE/cluster/kubeconfig
k() { "$K8S_BIN/kubectl" "$@"; }

# podinfo VERSION ERROR_RATE LATENCY_MS [ANNOTATIONS...]: the sample Deployment as YAML. With
# the real data plane, VERSION is podinfo's UI message (the image is the one podinfo built
# here) and the error rate and latency are podinfo's own: ERROR_RATE 0 or "random" (its
# --random-error mode); without it they are the simulator's annotations and VERSION the tag.
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
YAML
  if [ "$PLANE" = real ]; then
    cat <<YAML
    metadata:
      labels: {app: podinfo}
      annotations: {prometheus.io/scrape: "true", prometheus.io/port: "9898"}
    spec:
      nodeSelector: {serin.dev/node: real}
      tolerations: [{key: serin.dev/node, operator: Equal, value: real, effect: NoSchedule}]
      containers:
      - name: podinfo
        image: $PODINFO_IMAGE
        imagePullPolicy: Never
        command: [/podinfo, --port=9898, --level=warn]
        env: [{name: PODINFO_UI_MESSAGE, value: "$version"}]
        ports: [{containerPort: 9898, name: http}]
        readinessProbe: {httpGet: {path: /readyz, port: 9898}, periodSeconds: 2, failureThreshold: 10}
YAML
  else
    cat <<YAML
    metadata:
      labels: {app: podinfo}
      annotations: {simulate.serin.dev/error-rate: "$errors", simulate.serin.dev/latency-ms: "$latency"}
    spec:
      containers:
      - {name: podinfo, image: "ghcr.io/stefanprodan/podinfo:$version", ports: [{containerPort: 9898, name: http}]}
YAML
  fi
}
SETTINGS=('serin.dev/enabled: "true"' "serin.dev/interval: ${INTERVAL}s"
  "serin.dev/step-weight: \"$STEP\"" "serin.dev/max-weight: \"$MAX_WEIGHT\""
  "serin.dev/threshold: \"$THRESHOLD\"" "serin.dev/metrics-window: $WINDOW"
  "serin.dev/success-rate: \"$MIN_SUCCESS_RATE\"" "serin.dev/latency: ${MAX_P99_MS}ms")
if [ "$PLANE" = real ]; then
  # The demo's own host on Traefik's shared listener: other releases there keep theirs.
  HOST=$NS.serin.test
  SETTINGS+=("serin.dev/provider: gatewayapi" "serin.dev/gateway: $TRAEFIK_GATEWAY"
    "serin.dev/hosts: $HOST" "serin.dev/metrics-provider: traefik" "serin.dev/analysis: load")
fi

# canary_counts: "REQUESTS FAILED" the canary served so far. Real data plane: the canary
# backend's answers as Traefik counted them (5xx count as failed, as in the success-rate
# check). Simulated: the simulator's ground truth, serin_simulator_canary_requests_total of
# the canary (rounded to whole requests). "- -" when they cannot be read.
COUNTS='
import sys, urllib.request
url, plane, who = sys.argv[1], sys.argv[2], sys.argv[3]
total = failed = 0.0
truth = "serin_simulator_canary_requests_total{%s,outcome=\"" % who
for line in urllib.request.urlopen(url, timeout=3).read().decode().splitlines():
    if plane == "real" and line.startswith("traefik_service_requests_total{") and ("service=\"%s\"" % who) in line:
        value = float(line.rsplit(" ", 1)[1])
        total += value
        failed += value if "code=\"5" in line else 0
    elif plane != "real" and line.startswith(truth):
        value = float(line.rsplit(" ", 1)[1])
        total += value
        failed += value if line[len(truth):].startswith("failure") else 0
print(round(total), round(failed))
'
canary_counts() {
  if [ "$PLANE" = real ]; then
    python3 -c "$COUNTS" "$TRAEFIK_METRICS" real "$NS-podinfo-canary-http-9898@kubernetesgateway" 2>/dev/null || echo "- -"
  else
    python3 -c "$COUNTS" "http://127.0.0.1:$(cat "$STATE/simulator/port" 2>/dev/null)/metrics" simulated \
      "namespace=\"$NS\",name=\"podinfo\"" 2>/dev/null || echo "- -"
  fi
}

# sample TIMELINE START BEFORE MIN_SR MAX_P99 COUNTS BASE: reads the Canary (JSON) on stdin and
# prints "SECONDS<TAB>LINE" for the live view. Once Serin has taken up the new revision
# (status.revision is no longer BEFORE, the one from before the change), the line starts with
# the phase and the sample is appended to TIMELINE as one JSON object; START is when the new
# version was applied. COUNTS and BASE are canary_counts now and at the start.
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
counts, base = sys.argv[6].split(), sys.argv[7].split()
served = ""
if "-" not in counts + base:
    sample["canaryRequests"] = int(counts[0]) - int(base[0])
    sample["canaryFailures"] = int(counts[1]) - int(base[1])
    served = "   canary served %d (%d failed)" % (sample["canaryRequests"], sample["canaryFailures"])
with open(timeline, "a") as out:
    out.write(json.dumps(sample) + "\n")
def show(value, unit):
    return "-" if value is None else "%.1f%s" % (value, unit)
print("%d\t%-17s weight %3d%%   success rate %7s   p99 %8s   failed checks %d%s" % (
    elapsed, sample["phase"], sample["canaryWeight"], show(sample["successRate"], "%"),
    show(sample["p99Ms"], "ms"), sample["failedChecks"], served))
'

# release VERSION TITLE TIMEOUT CHANGE...: makes the change (a command) and shows one line per
# change of phase, weight or measured values until the release ends (Succeeded or Failed),
# recording every sample in .serin/demo/podinfo-VERSION.jsonl; then draws the chart.
release() {
  local version=$1 title=$2 timeout=$3; shift 3
  local timeline=$OUT/podinfo-$version.jsonl chart=$OUT/podinfo-$version.svg
  local before start deadline last="" out seconds line outcome="" base
  before=$(k -n "$NS" get canary podinfo -o jsonpath='{.status.revision}')
  base=$(canary_counts)
  : >"$timeline"
  start=$(date +%s.%N)
  deadline=$(( $(date +%s) + timeout ))
  [ "$1" = "$K8S_BIN/kubectl" ] && echo "  \$ kubectl ${*:2}"
  "$@" | sed 's/^/  /'
  while [ "$(date +%s)" -lt "$deadline" ]; do
    out=$(k -n "$NS" get canary podinfo -o json 2>/dev/null |
      python3 -c "$SAMPLE" "$timeline" "$start" "$before" "$MIN_SUCCESS_RATE" "$MAX_P99_MS" \
        "$(canary_counts)" "$base" || true)
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
apply() { podinfo "$@" | k apply -f -; }

step "A fresh namespace"
k delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
k create namespace "$NS" >/dev/null

if [ "$PLANE" = real ]; then
  FIRST=v1 GOOD=v2 BAD=v3
  step "Data plane: REAL. podinfo $(sed 's/.*://' <<<"$PODINFO_IMAGE") pods on the real node (kubelet + containerd), Traefik $TRAEFIK_VERSION as the Gateway API proxy ($TRAEFIK_GATEWAY at $TRAEFIK_URL), load from Flagger's load tester running hey; the checks read Traefik's series"
  k -n "$NS" apply -f - <<YAML | sed 's/^/  /'
apiVersion: apps/v1
kind: Deployment
metadata: {name: loadtester}
spec:
  replicas: 1
  selector: {matchLabels: {app: loadtester}}
  template:
    metadata: {labels: {app: loadtester}}
    spec:
      nodeSelector: {serin.dev/node: real}
      tolerations: [{key: serin.dev/node, operator: Equal, value: real, effect: NoSchedule}]
      containers:
      - name: loadtester
        image: $LOADTESTER_IMAGE
        imagePullPolicy: Never
        args: [-port=8080, -timeout=1h, -log-level=info, -zap-encoding=console]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
YAML
  k -n "$NS" rollout status deployment/loadtester --timeout=90s | sed 's/^/  /'
  LOADTESTER=http://$(k -n "$NS" get pods -l app=loadtester -o jsonpath='{.items[0].status.podIP}'):8080/
  echo "  the AnalysisTemplate 'load' calls it at every check (Flagger's rollout webhook payload): hey -z 5m -q 10 -c 2 -host $HOST $TRAEFIK_URL/"
  k -n "$NS" apply -f - <<YAML | sed 's/^/  /'
apiVersion: serin.dev/v1beta1
kind: AnalysisTemplate
metadata: {name: load}
spec:
  webhooks:
  - name: load-test
    type: rollout
    url: $LOADTESTER
    timeout: 5s
    metadata: {type: cmd, cmd: "hey -z 5m -q 10 -c 2 -host $HOST $TRAEFIK_URL/"}
YAML
else
  FIRST=6.7.0 GOOD=6.7.1 BAD=6.8.0
  step "Data plane: SIMULATED. kwok's fake pods, the SMI/Linkerd provider, success rate and latency written by the traffic simulator (no local Linkerd, NGINX or Gloo)"
fi

step "A Deployment you already run: podinfo $FIRST, $REPLICAS replicas"
apply "$FIRST" 0 30 'app.kubernetes.io/part-of: demo' | sed 's/^/  /'
k -n "$NS" rollout status deployment/podinfo --timeout=90s | sed 's/^/  /'

step "Opting in with mistakes: Serin refuses the change at apply time, naming each"
apply "$FIRST" 0 30 'serin.dev/enabled: "true"' 'serin.dev/step-weight: "0"' \
  'serin.dev/provider: istio' 'serin.dev/intervall: 30s' 2>&1 |
  sed -n 's/.*\(admission webhook\)/\1/; /admission webhook/,$p' | sed 's/^/  /' || true

step "Opting in correctly: the webhook creates the primary at once (kubectl prints it), the controller the rest"
apply "$FIRST" 0 30 "${SETTINGS[@]}" 2>&1 | sed 's/^/  /'
k -n "$NS" wait canary/podinfo --for=jsonpath='{.status.phase}'=Initialized --timeout=90s >/dev/null
if [ "$PLANE" = real ]; then
  k -n "$NS" get deployments,services,httproutes,canaries,pods -o wide | cut -c1-150 | sed 's/^/  /'
  echo "  through Traefik for $HOST: $(curl -s -m 3 -H "Host: $HOST" "$TRAEFIK_URL/" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%s answered %r" % (d["hostname"], d["message"]))')"
  step "Release $GOOD (healthy), as users release: kubectl set env; shifted $STEP% at a time, checked every $INTERVAL s"
  release "$GOOD" "healthy (real pods, real requests)" 240 \
    "$K8S_BIN/kubectl" -n "$NS" set env deployment/podinfo PODINFO_UI_MESSAGE="$GOOD"
  echo "  primary now answers: $(k -n "$NS" get deployment podinfo-primary -o jsonpath='{.spec.template.spec.containers[0].env[0].value}')"
  step "Release $BAD (broken: podinfo's own random errors, a third of its answers are 500, 400 or 409; the check counts the 5xx): rolled back as soon as the request counts show it fails (sequential checks, the default; Flagger's semantics, serin.dev/sequential-checks: \"false\", wait for $THRESHOLD failed checks)"
  release "$BAD" "broken (podinfo --random-error)" 240 \
    "$K8S_BIN/kubectl" -n "$NS" set env deployment/podinfo PODINFO_UI_MESSAGE="$BAD" PODINFO_RANDOM_ERROR=true
  echo "  primary still answers: $(k -n "$NS" get deployment podinfo-primary -o jsonpath='{.spec.template.spec.containers[0].env[0].value}')"
else
  k -n "$NS" get deployments,services,trafficsplits,canaries | sed 's/^/  /'
  step "Release $GOOD (healthy: no errors, 30 ms): shifted $STEP% at a time, checked every $INTERVAL s"
  release "$GOOD" "healthy (no errors, 30 ms)" 180 apply "$GOOD" 0 30 "${SETTINGS[@]}"
  echo "  primary now runs: $(k -n "$NS" get deployment podinfo-primary -o jsonpath='{.spec.template.spec.containers[0].image}')"
  step "Release $BAD (broken: 25% of requests fail): rolled back as soon as the request counts show it fails (sequential checks, the default; Flagger's semantics, serin.dev/sequential-checks: \"false\", wait for $THRESHOLD failed checks)"
  release "$BAD" "broken (25% of requests fail)" 180 apply "$BAD" 0.25 30 "${SETTINGS[@]}"
  echo "  primary still runs: $(k -n "$NS" get deployment podinfo-primary -o jsonpath='{.spec.template.spec.containers[0].image}')"
fi

step "What Serin recorded (kubectl get events)"
k -n "$NS" get events --field-selector involvedObject.kind=Deployment,involvedObject.name=podinfo \
  --sort-by=.metadata.creationTimestamp -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message 2>/dev/null |
  cut -c1-160 | sed 's/^/  /'

step "Timeline charts, one per release (open them in a browser)"
for chart in "${CHARTS[@]}"; do echo "  $chart"; done

step "Done ($PLANE data plane). KUBECONFIG=$KUBECONFIG; 'make down' stops everything."
