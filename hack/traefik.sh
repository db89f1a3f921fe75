#!/usr/bin/env bash
# Traefik, the real Gateway API data plane of the local environment (issue 16): an unmodified
# upstream build (hack/deps.sh traefik) run as a host process with the admin kubeconfig. It
# watches the cluster's Gateways and HTTPRoutes (GatewayClass `traefik`, controller
# `traefik.io/gateway-controller`) and sends each request straight to the pod addresses of the
# backend Services' EndpointSlices: the real node's pods on its bridge.
#
# Why on the host rather than as a pod: there is no kube-proxy, so a pod could not reach the
# API server's Service address; the host reaches both the API server (loopback) and the pods
# (the bridge). Its listener is on the host's address on the real node's bridge, the one
# address both the tests on the host and the load tester's pod reach; its metrics and ping
# stay on loopback.
#
#   hack/traefik.sh up | down | env
#
# `up` writes .serin/traefik/traefik.env:
#   TRAEFIK_URL      http://NODE_IP:PORT, the Gateway's listener (entry point `web`) on the
#                    bridge (NODE_IP in .serin/node/node.env)
#   TRAEFIK_PORT     that PORT, which is also the Gateway listener's port (Traefik matches a
#                    listener to the entry point with the same port)
#   TRAEFIK_GATEWAY  NAMESPACE/NAME of the Gateway, for `serin.dev/gateway`
#   TRAEFIK_METRICS  http://127.0.0.1:PORT/metrics (Prometheus format, scraped by the local
#                    Prometheus as job `traefik`)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
T=$STATE/traefik
KUBECONFIG_FILE=$STATE/cluster/kubeconfig
TARGET=$STATE/prometheus/targets/traefik.json
GATEWAY_NAMESPACE=traefik
GATEWAY_NAME=traefik
kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
pinged() { curl -fsS "http://127.0.0.1:$(cat "$T/metrics-port")/ping"; }

# The Gateway is Programmed once Traefik has taken it up with the listener on our port.
programmed() {
  [ "$(kubectl get gateway -n "$GATEWAY_NAMESPACE" "$GATEWAY_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Programmed")].status}')" = True ]
}

register() {
  mkdir -p "$(dirname "$TARGET")"
  printf '[{"targets": ["127.0.0.1:%s"], "labels": {"job": "traefik"}}]\n' "$1" >"$TARGET.tmp"
  mv "$TARGET.tmp" "$TARGET"
}

write_env() {
  cat >"$T/traefik.env.tmp" <<ENV
TRAEFIK_URL=http://$NODE_IP:$1
TRAEFIK_PORT=$1
TRAEFIK_GATEWAY=$GATEWAY_NAMESPACE/$GATEWAY_NAME
TRAEFIK_METRICS=http://127.0.0.1:$2/metrics
ENV
  mv "$T/traefik.env.tmp" "$T/traefik.env"
}

apply_gateway() {
  kubectl apply --server-side --field-manager=serin-local -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: $GATEWAY_NAMESPACE}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: traefik}
spec:
  controllerName: traefik.io/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: $GATEWAY_NAME, namespace: $GATEWAY_NAMESPACE}
spec:
  gatewayClassName: traefik
  listeners:
  - name: web
    port: $1
    protocol: HTTP
    allowedRoutes: {namespaces: {from: All}}
YAML
}

up() {
  mkdir -p "$T"
  exec 9>"$T/.lock"; flock 9
  "$ROOT/hack/node.sh" up
  # shellcheck source=/dev/null
  source "$STATE/node/node.env"
  local bin; bin=$CACHE/traefik-$TRAEFIK_VERSION/bin/traefik
  "$ROOT/hack/deps.sh" traefik >/dev/null
  "$ROOT/hack/crds.sh" up >/dev/null
  # Restarted when the cluster, the node's address or this script (its flags) changed.
  if alive "$T/traefik.pid" && [ "$T/traefik.pid" -nt "$KUBECONFIG_FILE" ] &&
    [ "$T/traefik.pid" -nt "$0" ] &&
    grep -qx "TRAEFIK_URL=http://$NODE_IP:[0-9]*" "$T/traefik.env" 2>/dev/null &&
    pinged >/dev/null 2>&1 && programmed; then
    register "$(cat "$T/metrics-port")"
    say "traefik already running at $(grep TRAEFIK_URL "$T/traefik.env" | cut -d= -f2) (log $T/traefik.log)"
    return 0
  fi
  stop_pid traefik "$T/traefik.pid"
  local web metrics
  web=$(free_port); metrics=$(free_port)
  while [ "$metrics" = "$web" ]; do metrics=$(free_port); done
  echo "$metrics" >"$T/metrics-port"
  apply_gateway "$web"
  # Offline: no version check, no usage reports. Latency buckets finer than Traefik's
  # default (0.1, 0.3, 1.2, 5 s), which reads a 1 ms p99 as about 99 ms. Only the Gateway
  # API provider: nothing else of the cluster (Ingresses, Traefik's own CRDs) is read.
  KUBECONFIG=$KUBECONFIG_FILE start_bg traefik "$T/traefik.pid" "$T/traefik.log" "$bin" \
    --global.checkNewVersion=false --global.sendAnonymousUsage=false \
    --log.level=INFO \
    --entryPoints.web.address="$NODE_IP:$web" \
    --entryPoints.metrics.address="127.0.0.1:$metrics" \
    --ping=true --ping.entryPoint=metrics \
    --metrics.prometheus=true --metrics.prometheus.entryPoint=metrics \
    --metrics.prometheus.addServicesLabels=true --metrics.prometheus.addEntryPointsLabels=true \
    --metrics.prometheus.buckets=0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5 \
    --providers.kubernetesgateway=true
  wait_for traefik "$T/traefik.log" 60 pinged
  wait_for "the Gateway $GATEWAY_NAMESPACE/$GATEWAY_NAME to be Programmed by traefik" \
    "$T/traefik.log" 60 programmed
  write_env "$web" "$metrics"
  register "$metrics"
  say "traefik $TRAEFIK_VERSION up: Gateway $GATEWAY_NAMESPACE/$GATEWAY_NAME listening at http://$NODE_IP:$web, metrics at http://127.0.0.1:$metrics/metrics"
}

down() {
  [ -d "$T" ] || return 0
  exec 9>"$T/.lock"; flock 9
  rm -f "$TARGET" "$T/traefik.env"
  stop_pid traefik "$T/traefik.pid"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  env) cat "$T/traefik.env" ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
