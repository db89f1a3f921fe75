#!/usr/bin/env bash
# Registers the real node's pods with the local Prometheus. Debian's Prometheus is built
# without Kubernetes service discovery, so a small loop stands in for it: every second it
# lists the Running pods on the real node whose template asks to be scraped
# (`prometheus.io/scrape: "true"`, `prometheus.io/port: PORT`) and writes them to
# .serin/prometheus/targets/real-node-pods.json, labelled `job="real-node-pods"`, `namespace`,
# `pod` and `app` (the pod's `app` label: `podinfo` for canary pods, `podinfo-primary` for
# the primary's). Only addresses of the real node's subnet are written: nothing else is
# scraped.
#
#   hack/podtargets.sh up | down
set -euo pipefail
source "$(dirname "$0")/lib.sh"
S=$STATE/podtargets
TARGET=$STATE/prometheus/targets/real-node-pods.json

up() {
  mkdir -p "$S" "$(dirname "$TARGET")"
  exec 9>"$S/.lock"; flock 9
  # shellcheck source=/dev/null
  source "$STATE/node/node.env" 2>/dev/null || die "the real node is not up (hack/node.sh up)"
  if alive "$S/podtargets.pid" && [ "$S/podtargets.pid" -nt "$STATE/node/node.env" ] &&
    [ "$S/podtargets.pid" -nt "$STATE/cluster/kubeconfig" ]; then
    say "pod targets already written (log $S/podtargets.log)"; return 0
  fi
  stop_pid podtargets "$S/podtargets.pid"
  start_bg podtargets "$S/podtargets.pid" "$S/podtargets.log" python3 -u -c "$LOOP" \
    "$K8S_BIN/kubectl" "$STATE/cluster/kubeconfig" "$NODE_NAME" "$SUBNET" "$TARGET"
  say "pods on $NODE_NAME annotated prometheus.io/scrape=true are scraped (targets in $TARGET)"
}

down() {
  [ -d "$S" ] || return 0
  exec 9>"$S/.lock"; flock 9
  stop_pid podtargets "$S/podtargets.pid"
  rm -f "$TARGET"
}

LOOP='
import ipaddress, json, os, subprocess, sys, time
kubectl, kubeconfig, node, subnet, target = sys.argv[1:]
subnet = ipaddress.ip_network(subnet)
last = None
while True:
    try:
        out = subprocess.run(
            [kubectl, "--kubeconfig", kubeconfig, "get", "pods", "-A", "-o", "json",
             "--field-selector", "spec.nodeName=" + node + ",status.phase=Running"],
            capture_output=True, text=True, timeout=10, check=True).stdout
        groups = []
        for pod in json.loads(out)["items"]:
            meta = pod["metadata"]
            notes = meta.get("annotations") or {}
            ip = pod["status"].get("podIP")
            if notes.get("prometheus.io/scrape") != "true" or not ip:
                continue
            if ipaddress.ip_address(ip) not in subnet:
                continue
            port = notes.get("prometheus.io/port", "80")
            if not port.isdigit() or not 0 < int(port) < 65536:
                continue  # a pod with a bad port is skipped, not every pod with it
            port = int(port)
            groups.append({"targets": ["%s:%d" % (ip, port)],
                           "labels": {"job": "real-node-pods", "namespace": meta["namespace"],
                                      "pod": meta["name"],
                                      "app": (meta.get("labels") or {}).get("app", "")}})
        text = json.dumps(sorted(groups, key=lambda g: g["targets"]), indent=1)
        if text != last:
            with open(target + ".tmp", "w") as f:
                f.write(text)
            os.replace(target + ".tmp", target)
            print("%d pod target(s)" % len(groups), flush=True)
            last = text
    except Exception as e:
        print("listing pods failed: %s" % e, flush=True)
    time.sleep(1)
'

case ${1:-} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
