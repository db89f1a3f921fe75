#!/usr/bin/env bash
# The real node's tests (make test-node), run alone: they start and stop the node.
#
#  1. host state: snapshot the host (hack/hoststate.sh), `node.sh up`, run the pods below,
#     `node.sh down`, snapshot again; the two snapshots must be equal.
#  2. real pods: a podinfo Deployment (2 replicas) asking for the real node becomes Available
#     there; each pod answers HTTP on its pod IP on the bridge with the version of its image;
#     one pod reaches the other over the bridge (podinfo's /api/echo with a --backend-url);
#     a Pod that does not tolerate the node's taint is not scheduled there.
#
# Prints the times of node up, pods Available and node down. Exit 0 when all passed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
C=$STATE/cluster
N=$STATE/node
OUT=$STATE/test-node
NS=serin-node-test
mkdir -p "$OUT"
kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$C/kubeconfig" "$@"; }
fail() { say "FAIL: $*"; exit 1; }
now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }

"$ROOT/hack/cluster.sh" up
if "$ROOT/hack/node.sh" status; then
  say "the node is running; stopping it (and Traefik and the pod targets, which use it) first so that the snapshot is of the host without it"
  "$ROOT/hack/traefik.sh" down
  "$ROOT/hack/podtargets.sh" down
  "$ROOT/hack/node.sh" down
fi
# Build what the node needs before the snapshot (package installation is not host state
# this test compares, and builds can take minutes).
"$ROOT/hack/deps.sh" k8s
"$ROOT/hack/images.sh" build >/dev/null
"$ROOT/hack/hoststate.sh" snapshot "$OUT/before.txt"

t0=$(now)
"$ROOT/hack/node.sh" up
t_up=$(secs "$t0" "$(now)")
# shellcheck source=/dev/null
source "$N/node.env"

passed=0
check() { say "ok: $*"; passed=$((passed + 1)); }

# podinfo_spec INDENT LINE: a pod spec on the real node (its selector and toleration), one
# podinfo container with LINE added, each line indented by INDENT.
podinfo_spec() {
  sed "s/^/$1/" <<YAML
  nodeSelector: {serin.dev/node: real}
  tolerations: [{key: serin.dev/node, operator: Equal, value: real, effect: NoSchedule}]
  containers:
  - name: podinfo
    image: $PODINFO_IMAGE
    imagePullPolicy: Never
    $2
    readinessProbe: {httpGet: {path: /readyz, port: 9898}, periodSeconds: 1}
YAML
}

run_pods() {
  kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
  kubectl create namespace "$NS" >/dev/null
  local t1
  t1=$(now)
  kubectl -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: podinfo}
spec:
  replicas: 2
  selector: {matchLabels: {app: podinfo}}
  template:
    metadata: {labels: {app: podinfo}}
    spec:
$(podinfo_spec "    " "ports: [{containerPort: 9898}]")
YAML
  kubectl -n "$NS" rollout status deployment/podinfo --timeout=90s >/dev/null ||
    fail "podinfo not Available on $NODE_NAME in 90s (read $N/kubelet.log and $N/containerd.log)"
  t_pods=$(secs "$t1" "$(now)")
  check "a Deployment of 2 podinfo replicas Available on the real node in ${t_pods}s"

  local nodes ips ip version
  nodes=$(kubectl -n "$NS" get pods -l app=podinfo -o jsonpath='{.items[*].spec.nodeName}')
  [ "$(echo "$nodes" | tr ' ' '\n' | sort -u)" = "$NODE_NAME" ] || fail "pods ran on: $nodes"
  ips=$(kubectl -n "$NS" get pods -l app=podinfo -o jsonpath='{.items[*].status.podIP}')
  for ip in $ips; do
    python3 -c 'import ipaddress, sys; sys.exit(ipaddress.ip_address(sys.argv[1]) not in ipaddress.ip_network(sys.argv[2]))' \
      "$ip" "$SUBNET" || fail "pod IP $ip is not on the bridge's $SUBNET"
    version=$(curl -fsS -m 5 "http://$ip:9898/version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])') ||
      fail "no HTTP answer from the pod at $ip:9898"
    [ "$PODINFO_IMAGE" = "${PODINFO_IMAGE%:*}:$version" ] || fail "pod at $ip reports version $version, image is $PODINFO_IMAGE"
  done
  check "each pod answers HTTP on its pod IP on the bridge ($ips) with version $version"

  # Pod to pod over the bridge: podinfo's /api/echo forwards the request to its backends.
  local first
  first=${ips%% *}
  kubectl -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: caller}
spec:
$(podinfo_spec "" "args: [--port=9898, --backend-url=http://$first:9898/echo]")
YAML
  kubectl -n "$NS" wait pod/caller --for=condition=Ready --timeout=60s >/dev/null ||
    fail "pod caller not Ready (read $N/kubelet.log)"
  local caller answer
  caller=$(kubectl -n "$NS" get pod caller -o jsonpath='{.status.podIP}')
  answer=$(curl -fsS -m 10 -X POST -d "hello from the host" "http://$caller:9898/api/echo") ||
    fail "no answer from /api/echo of the pod at $caller"
  echo "$answer" | grep -q "hello from the host" || fail "the echo through $first came back as: $answer"
  check "pod $caller reached pod $first over the bridge (/api/echo through its backend)"

  kubectl logs -n "$NS" caller --tail=1 >/dev/null || fail "kubectl logs of a pod on the real node"
  check "kubectl logs reaches the kubelet at $NODE_IP"

  # Without the toleration, a Pod goes to kwok's fake node, never to the real one.
  kubectl -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: untolerated}
spec:
  containers: [{name: c, image: $PODINFO_IMAGE, imagePullPolicy: Never}]
YAML
  kubectl -n "$NS" wait pod/untolerated --for=jsonpath='{.spec.nodeName}'=kwok-node-0 --timeout=30s >/dev/null ||
    fail "a Pod without the toleration was scheduled on $(kubectl -n "$NS" get pod untolerated -o jsonpath='{.spec.nodeName}')"
  check "a Pod without the toleration lands on kwok-node-0, not on $NODE_NAME"

  kubectl delete namespace "$NS" --wait=true --timeout=60s >/dev/null
}

status=0
( run_pods ) || status=$?

t2=$(now)
"$ROOT/hack/node.sh" down || status=1
t_down=$(secs "$t2" "$(now)")
"$ROOT/hack/hoststate.sh" snapshot "$OUT/after.txt"
if "$ROOT/hack/hoststate.sh" compare "$OUT/before.txt" "$OUT/after.txt" >"$OUT/host.diff"; then
  say "ok: the host after node down equals the host before node up ($(wc -l <"$OUT/before.txt") lines compared: $OUT/before.txt)"
else
  say "FAIL: the host differs after node down:"; cat "$OUT/host.diff" >&2
  status=1
fi
say "times: node up ${t_up}s, node down ${t_down}s"
[ "$status" = 0 ] || { say "test-node FAILED"; exit 1; }
say "test-node: all checks passed"
