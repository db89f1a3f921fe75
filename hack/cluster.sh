#!/usr/bin/env bash
# The local Kubernetes control plane: etcd (on tmpfs), kube-apiserver (RBAC),
# kube-controller-manager, kube-scheduler and kwok with one fake node, so Deployments
# really create ReplicaSets and Pods become Ready.
#
#   hack/cluster.sh up       build what is missing, start what is not running (idempotent)
#   hack/cluster.sh down     stop the processes this script started (by pid), drop etcd data
#   hack/cluster.sh status   exit 0 when the API server answers /readyz
#
# State, pid files and logs: .serin/cluster/. Kubeconfig: .serin/cluster/kubeconfig.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
C=$STATE/cluster
PKI=$C/pki
COMPONENTS=(kwok kube-scheduler kube-controller-manager kube-apiserver etcd)

kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$C/kubeconfig" "$@"; }

make_pki() {
  [ -f "$PKI/.complete" ] && return 0
  say "making the cluster PKI in $PKI"
  rm -rf "$PKI"; mkdir -p "$PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 365 \
      -subj "/CN=serin-local-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out apiserver.crt -days 365 -extfile server.ext 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr \
      -subj "/O=system:masters/CN=serin-local-admin" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out admin.crt -days 365 -extfile client.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr
  )
  touch "$PKI/.complete"
}

write_kubeconfig() {
  local port=$1
  cat >"$C/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: serin-local
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $PKI/ca.crt
users:
- name: admin
  user:
    client-certificate: $PKI/admin.crt
    client-key: $PKI/admin.key
contexts:
- name: serin-local
  context: {cluster: serin-local, user: admin}
current-context: serin-local
KC
}

readyz() { kubectl get --raw /readyz; }
default_sa() { kubectl -n default get serviceaccount default; }
node_ready() {
  [ "$(kubectl get node kwok-node-0 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

up() {
  mkdir -p "$C"
  exec 9>"$C/.lock"
  flock 9   # concurrent callers (parallel test binaries) wait for the first one
  if all_running && readyz >/dev/null 2>&1; then
    say "cluster already running (kubeconfig $C/kubeconfig)"
    return 0
  fi
  # A partial or crashed start: stop leftovers, start clean.
  down_locked quiet
  "$ROOT/hack/deps.sh" k8s; "$ROOT/hack/deps.sh" etcd; "$ROOT/hack/deps.sh" kwok
  make_pki
  local t0; t0=$(date +%s)
  local etcd_port peer_port api_port sched_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port); sched_port=$(free_port)
  printf 'ETCD_PORT=%s\nAPISERVER_PORT=%s\nSCHEDULER_PORT=%s\n' "$etcd_port" "$api_port" "$sched_port" >"$C/ports.env"
  # etcd on tmpfs: fsync on a 2-core VM disk is what makes a local apiserver slow.
  local data=/dev/shm/serin-etcd-$(echo "$ROOT" | md5sum | cut -c1-8)
  [ -w /dev/shm ] || data=$C/etcd-data
  rm -rf "$data"; mkdir -p "$data"; echo "$data" >"$C/etcd-data-dir"
  start_bg etcd "$C/etcd.pid" "$C/etcd.log" "$ETCD_BIN/etcd" --name default \
    --data-dir "$data" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level warn
  wait_for etcd "$C/etcd.log" 30 curl -fsS "http://127.0.0.1:$etcd_port/health"

  # --kubelet-*: logs, exec and port-forward reach the real node's kubelet (hack/node.sh) at
  # its InternalIP (the node's bridge address), as the admin client.
  # --enable-aggregator-routing: the API server calls a webhook given as a Service at one of
  # the Service's ready endpoints (a pod address) instead of its ClusterIP, which nothing
  # routes here (no kube-proxy). Serin in-cluster (hack/in-cluster.sh) relies on it; webhooks
  # given by `url:` (the host's Serin) are not affected.
  start_bg kube-apiserver "$C/kube-apiserver.pid" "$C/kube-apiserver.log" "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --secure-port "$api_port" --advertise-address 127.0.0.1 \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true \
    --authorization-mode RBAC --enable-priority-and-fairness=false \
    --profiling=false --v=1 \
    --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
    --kubelet-preferred-address-types InternalIP \
    --enable-aggregator-routing=true
  write_kubeconfig "$api_port"
  wait_for kube-apiserver "$C/kube-apiserver.log" 120 readyz

  # Each controller writes under its own ServiceAccount in kube-system (as kubeadm and managed
  # clusters run it), not as the admin whose kubeconfig starts it: Serin's protection of
  # managed objects tells the garbage collector or the HPA from a person by that identity.
  start_bg kube-controller-manager "$C/kube-controller-manager.pid" "$C/kube-controller-manager.log" \
    "$K8S_BIN/kube-controller-manager" --kubeconfig "$C/kubeconfig" --leader-elect=false \
    --secure-port 0 --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" \
    --use-service-account-credentials=true --controllers '*' --v=1 \
    --kube-api-qps 300 --kube-api-burst 600 --concurrent-deployment-syncs 10 \
    --concurrent-replicaset-syncs 10
  start_bg kube-scheduler "$C/kube-scheduler.pid" "$C/kube-scheduler.log" \
    "$K8S_BIN/kube-scheduler" --kubeconfig "$C/kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port "$sched_port" --v=1 \
    --kube-api-qps 300 --kube-api-burst 600
  # kwok manages only its own fake node (annotated below), not the real node of hack/node.sh.
  start_bg kwok "$C/kwok.pid" "$C/kwok.log" "$KWOK_DIR/bin/kwok" \
    --kubeconfig "$C/kubeconfig" --config "$KWOK_DIR/stages/default.yaml" \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake --cidr 10.244.0.0/16 --node-ip 10.0.0.1 \
    --node-lease-duration-seconds 40
  wait_for "kube-controller-manager (default ServiceAccount)" "$C/kube-controller-manager.log" 60 default_sa
  kubectl apply -f - >/dev/null <<'NODE'
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations: {node.alpha.kubernetes.io/ttl: "0", kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/hostname: kwok-node-0, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
status:
  allocatable: {cpu: "512", memory: 4Ti, pods: "5000"}
  capacity: {cpu: "512", memory: 4Ti, pods: "5000"}
NODE
  wait_for "kwok (node kwok-node-0 Ready)" "$C/kwok.log" 60 node_ready
  ln -sfn "$K8S_BIN" "$STATE/bin"
  say "cluster up in $(( $(date +%s) - t0 ))s: export KUBECONFIG=$C/kubeconfig (kubectl: $K8S_BIN/kubectl)"
}

all_running() {
  local c
  for c in "${COMPONENTS[@]}"; do alive "$C/$c.pid" || return 1; done
}

down_locked() {
  local c
  for c in "${COMPONENTS[@]}"; do stop_pid "$c" "$C/$c.pid"; done
  if [ -f "$C/etcd-data-dir" ]; then rm -rf "$(cat "$C/etcd-data-dir")"; rm -f "$C/etcd-data-dir"; fi
  [ "${1:-}" = quiet ] || say "cluster stopped"
}

down() {
  [ -d "$C" ] || { say "no cluster state in $C"; return 0; }
  exec 9>"$C/.lock"; flock 9
  down_locked
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) [ -f "$C/kubeconfig" ] && readyz >/dev/null 2>&1 ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
