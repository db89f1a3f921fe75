#!/usr/bin/env bash
# Serin in the local cluster, installed as users install it: its image (hack/image.sh) in the
# real node's containerd, and `kubectl apply -k` of a local overlay over manifests/ with two
# replicas on the real node, Pod Security `restricted`, the webhooks and the CRD conversion
# called through the `serin` Service, the Lease held by one of the pods.
#
#   hack/in-cluster.sh up       (make in-cluster) idempotent; stops the host's `serin run`
#   hack/in-cluster.sh down     removes Serin's pods, Service and webhook registrations;
#                               `make up` (hack/serin.sh up) then runs Serin on the host again
#   hack/in-cluster.sh status   exit 0 when Serin runs in the cluster
#
# Certificates: CERTS=self-signed (default; manifests/overlays/self-signed) or
# CERTS=cert-manager (manifests/overlays/cert-manager; needs hack/cert-manager.sh up).
#
# The installer: INSTALL=kustomize (default: `kubectl apply -k`) or INSTALL=helm (`helm
# upgrade --install` of charts/serin with the real Helm from hack/deps.sh helm, taking over
# what a kustomize install left, as users moving to the chart do; the same changes below as
# values in .serin/in-cluster/values.yaml). Either one removes the other's install first:
# one Serin at a time.
#
# What differs from a user's cluster, all in the overlay at .serin/in-cluster/ and said here:
# - the image is serin.local/serin:<tag> with imagePullPolicy Never (there is no registry);
# - the pods select and tolerate the real node (kwok's fake node would not run them);
# - there is no kube-proxy, so ClusterIPs do not route: the pods reach the API server and
#   Prometheus, which listen on the host's loopback, through hack/forward.py on the host's
#   bridge address. The API server is named kubernetes.default.svc (its certificate's name)
#   through a hostAliases entry, with KUBERNETES_SERVICE_PORT the forwarded port; Serin's
#   in-cluster configuration is otherwise the one users get.
# - the API server calls the webhooks at the Service's endpoints (pod addresses), which
#   hack/cluster.sh enables with --enable-aggregator-routing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
I=$STATE/in-cluster
CERTS=${CERTS:-self-signed}
INSTALL=${INSTALL:-kustomize}
kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$STATE/cluster/kubeconfig" "$@"; }
NS=serin-system

node_env() {
  [ -f "$STATE/node/node.env" ] || die "the real node is not up (hack/node.sh up, or make up)"
  # shellcheck disable=SC1091
  source "$STATE/node/node.env"
}

# The forwarders from the bridge address to the API server and Prometheus on loopback.
forward() {
  local api_port prom_port args
  api_port=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}' | sed 's/.*://')
  prom_port=$("$ROOT/hack/prometheus.sh" url | sed 's/.*://')
  args="$NODE_IP:$api_port=127.0.0.1:$api_port $NODE_IP:$prom_port=127.0.0.1:$prom_port"
  if alive "$I/forward.pid" && [ "$(cat "$I/forward.args" 2>/dev/null)" = "$args" ]; then
    :
  else
    stop_pid forward "$I/forward.pid"
    # shellcheck disable=SC2086
    start_bg forward "$I/forward.pid" "$I/forward.log" python3 "$ROOT/hack/forward.py" $args
    echo "$args" >"$I/forward.args"
    wait_for forward "$I/forward.log" 10 grep -q "$NODE_IP:$prom_port" "$I/forward.log"
  fi
  API_PORT=$api_port PROM_PORT=$prom_port
}

# IN_CLUSTER_ENV="SERIN_X=v,SERIN_Y=w": more settings for the pods (the tests shorten the
# self-signed certificates' lifetime with it); only SERIN_* names. Read into EXTRA_ENV.
EXTRA_ENV=()

# The settings of this run, checked once before anything is built or started (the image
# build alone takes minutes), in the script's own shell: a refusal stops the script.
check_settings() {
  local kv
  case $CERTS in
    self-signed | cert-manager) ;;
    *) die "CERTS must be self-signed or cert-manager, not $CERTS" ;;
  esac
  case $INSTALL in
    kustomize | helm) ;;
    *) die "INSTALL must be kustomize or helm, not $INSTALL" ;;
  esac
  [ -z "${IN_CLUSTER_ENV:-}" ] || IFS=, read -r -a EXTRA_ENV <<<"$IN_CLUSTER_ENV"
  for kv in "${EXTRA_ENV[@]}"; do
    [[ $kv =~ ^SERIN_[A-Z_]+=[A-Za-z0-9._:/-]*$ ]] || die "IN_CLUSTER_ENV: $kv is not SERIN_NAME=value"
  done
}

# EXTRA_ENV as YAML list items, each line prefixed with $1.
extra_env() {
  local kv
  for kv in "${EXTRA_ENV[@]}"; do
    printf '%s- {name: %s, value: "%s"}\n' "$1" "${kv%%=*}" "${kv#*=}"
  done
}

overlay() {
  local ref=$1 component=../../manifests/overlays/$CERTS env
  env=$(extra_env '            ')
  cat >"$I/kustomization.yaml.tmp" <<EOF
# Written by hack/in-cluster.sh: manifests/ as users install it, with what this machine
# needs (see the script's header).
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- ../../manifests
components:
- $component
images:
- name: serin
  newName: ${ref%:*}
  newTag: ${ref##*:}
patches:
- target: {group: apps, version: v1, kind: Deployment, name: serin, namespace: $NS}
  patch: |-
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: serin, namespace: $NS}
    spec:
      template:
        spec:
          nodeSelector: {serin.dev/node: real}
          tolerations:
          - {key: serin.dev/node, operator: Equal, value: real, effect: NoSchedule}
          hostAliases:
          - {ip: "$NODE_IP", hostnames: [kubernetes.default.svc]}
          containers:
          - name: serin
            imagePullPolicy: Never
            env:
            - {name: KUBERNETES_SERVICE_HOST, value: kubernetes.default.svc}
            - {name: KUBERNETES_SERVICE_PORT, value: "$API_PORT"}
            - {name: SERIN_PROMETHEUS_URL, value: "http://$NODE_IP:$PROM_PORT"}
$env
EOF
  mv "$I/kustomization.yaml.tmp" "$I/kustomization.yaml"
}

# The chart's values for this machine: the same changes as overlay()'s patch.
values() {
  local ref=$1
  {
    echo "# Written by hack/in-cluster.sh (INSTALL=helm): charts/serin's values for this machine."
    echo "certificates: $CERTS"
    # serin-system exists already (made before Serin, and kept across installs).
    echo "namespace: {create: false}"
    echo "image: {repository: \"${ref%:*}\", tag: \"${ref##*:}\", pullPolicy: Never}"
    echo "prometheus: {url: \"http://$NODE_IP:$PROM_PORT\"}"
    echo "nodeSelector: {serin.dev/node: real}"
    echo "tolerations: [{key: serin.dev/node, operator: Equal, value: real, effect: NoSchedule}]"
    echo "hostAliases: [{ip: \"$NODE_IP\", hostnames: [kubernetes.default.svc]}]"
    echo "env:"
    echo "- {name: KUBERNETES_SERVICE_HOST, value: kubernetes.default.svc}"
    echo "- {name: KUBERNETES_SERVICE_PORT, value: \"$API_PORT\"}"
    extra_env ''
  } >"$I/values.yaml.tmp"
  mv "$I/values.yaml.tmp" "$I/values.yaml"
}

helm() {
  local bin
  bin=$("$ROOT/hack/deps.sh" helm | tail -1) || die "hack/deps.sh helm failed"
  HELM_CONFIG_HOME=$I/helm/config HELM_CACHE_HOME=$I/helm/cache HELM_DATA_HOME=$I/helm/data \
    "$bin/helm" --kubeconfig "$STATE/cluster/kubeconfig" "$@"
}

# A Helm release of Serin exists (its record is a Secret Helm labels owner=helm).
helm_release() {
  [ -n "$(kubectl -n "$NS" get secret -l owner=helm,name=serin -o name 2>/dev/null)" ]
}

# `helm uninstall`: the chart's objects go, its CRDs stay (resource policy keep).
helm_uninstall() {
  say "helm uninstall serin (the CRDs and every Canary stay)"
  helm uninstall serin --namespace "$NS" --wait --timeout 120s >"$I/helm.log" 2>&1 ||
    { cat "$I/helm.log" >&2; die "helm uninstall failed"; }
}

# The host's Serin registered its webhooks and the CRDs' conversion by url; the base names
# the Service. Both at once is invalid, so the conversion goes to the Service first (the
# webhook configurations were deleted with the host's Serin).
to_service() {
  local crd patch
  patch='{"spec":{"conversion":{"webhook":{"clientConfig":{"url":null,"service":{"name":"serin","namespace":"serin-system","path":"/convert","port":443}}}}}}'
  for crd in canaries analysistemplates canarypolicies; do
    kubectl get crd "$crd.serin.dev" >/dev/null 2>&1 &&
      kubectl patch crd "$crd.serin.dev" --type merge -p "$patch" >/dev/null
  done
}

# The API server reached Serin through the Service: a refused dry run names Serin's check,
# and a v1alpha1 object converts.
served() {
  kubectl create --dry-run=server -f - >/dev/null 2>"$I/served.err" <<'EOF' && return 1
apiVersion: apps/v1
kind: Deployment
metadata:
  name: in-cluster-probe
  namespace: default
  annotations: {serin.dev/enabled: "true", serin.dev/step-weight: "0"}
spec:
  selector: {matchLabels: {app: probe}}
  template:
    metadata: {labels: {app: probe}}
    spec: {containers: [{name: app, image: probe}]}
EOF
  grep -q 'serin.dev/step-weight' "$I/served.err" || return 1
  kubectl create --dry-run=server -f - >/dev/null 2>&1 <<'EOF'
apiVersion: serin.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: in-cluster-probe, namespace: default}
spec: {}
EOF
}

lease_holder_is_a_pod() {
  local holder pods
  holder=$(kubectl -n "$NS" get lease serin-controller -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)
  [ -n "$holder" ] || return 1
  pods=$(kubectl -n "$NS" get pods -l app.kubernetes.io/name=serin -o jsonpath='{.items[*].metadata.name}')
  # The identity is the holder's host name (the pod's name) and its process id.
  for p in $pods; do [ "${holder%-*}" = "$p" ] && return 0; done
  return 1
}

up() {
  mkdir -p "$I"
  exec 9>"$I/.lock"; flock 9
  local t0; t0=$(date +%s)
  check_settings
  "$ROOT/hack/cluster.sh" status || die "the cluster is not running (make up first)"
  node_env
  # cert-manager's CRDs, controller and cainjector (on the host) before its Component.
  if [ "$CERTS" = cert-manager ]; then "$ROOT/hack/cert-manager.sh" up; fi
  # The CRDs Serin's releases use (SMI, Gateway API, Gloo); Serin's own come with the
  # overlay, their conversion through the Service.
  SERIN_OWN_CRDS=skip "$ROOT/hack/crds.sh" up
  "$ROOT/hack/image.sh" import "$CONTAINERD_SOCKET"
  local ref; ref=$("$ROOT/hack/image.sh" ref)
  forward
  case $INSTALL in
    kustomize) overlay "$ref" ;;
    helm) values "$ref" ;;
  esac
  # One Serin at a time: the host's process and its url registrations go first.
  if alive "$STATE/serin/serin.pid"; then "$ROOT/hack/serin.sh" down; fi
  to_service
  if [ "$INSTALL" = helm ]; then
    say "helm upgrade --install serin charts/serin ($CERTS certificates, image $ref, values $I/values.yaml)"
    # --force-conflicts: Helm 4 applies server-side, and `kubectl apply` owns the admission
    # policies' atomic fields (matchConstraints, validations) with the API server's defaults
    # filled in, which the chart does not write: without it the take-over stops on conflicts.
    helm upgrade --install serin "$ROOT/charts/serin" --namespace "$NS" --take-ownership \
      --force-conflicts --values "$I/values.yaml" --timeout 180s >"$I/apply.log" 2>&1 ||
      { cat "$I/apply.log" >&2; die "helm upgrade --install failed"; }
  else
    if helm_release; then helm_uninstall; fi
    say "kubectl apply -k $I ($CERTS certificates, image $ref)"
    kubectl apply -k "$I" >"$I/apply.log" 2>&1 || { cat "$I/apply.log" >&2; die "kubectl apply -k failed"; }
  fi
  echo "$CERTS" >"$I/certs"
  kubectl -n "$NS" rollout status deployment/serin --timeout=180s >&2 ||
    die "Serin's pods did not become Ready (kubectl -n $NS describe pods -l app.kubernetes.io/name=serin; kubectl -n $NS logs deploy/serin)"
  wait_for "the Lease held by one of Serin's pods" "$I/apply.log" 60 lease_holder_is_a_pod
  wait_for "the webhooks and the conversion served through the Service" "$I/served.err" 60 served
  say "Serin runs in the cluster ($INSTALL): 2 replicas on $NODE_NAME, Lease held by $(kubectl -n "$NS" get lease serin-controller -o jsonpath='{.spec.holderIdentity}') ($(( $(date +%s) - t0 ))s)"
}

down() {
  [ -d "$I" ] || return 0
  exec 9>"$I/.lock"; flock 9
  if "$ROOT/hack/cluster.sh" status; then
    # Registrations first: with failurePolicy Fail a registered webhook without pods would
    # refuse every write of an annotated Deployment.
    kubectl delete mutatingwebhookconfiguration/serin validatingwebhookconfiguration/serin \
      --ignore-not-found >/dev/null
    if helm_release; then helm_uninstall; fi
    if kubectl -n "$NS" get deployment serin >/dev/null 2>&1; then
      kubectl -n "$NS" delete deployment/serin service/serin poddisruptionbudget/serin \
        --ignore-not-found --wait=true --timeout=60s >/dev/null
      kubectl -n "$NS" delete secret serin-webhook-tls --ignore-not-found >/dev/null
      say "removed Serin's pods, Service and webhook registrations"
    fi
  fi
  stop_pid forward "$I/forward.pid"
  rm -f "$I/certs"
}

status() {
  "$ROOT/hack/cluster.sh" status && kubectl -n "$NS" get deployment serin >/dev/null 2>&1
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
