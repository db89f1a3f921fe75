#!/usr/bin/env bash
# The traffic simulator of the local environment (`serin simulate`): follows the weights of
# the router objects Serin owns and exports Linkerd-style series for each version, which the
# local Prometheus scrapes every second (target file .serin/prometheus/targets/simulator.json).
# It uses the admin kubeconfig: it stands in for the mesh, not for Serin.
#
#   hack/simulator.sh up | down
# State and log: .serin/simulator/. Restarts the simulator when the binary or the kubeconfig
# (a restarted cluster listens on a new port) is newer than the process.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
S=$STATE/simulator
BIN=$ROOT/target/debug/serin
TARGET=$STATE/prometheus/targets/simulator.json
KUBECONFIG_FILE=$STATE/cluster/kubeconfig
healthy() { curl -fsS "http://127.0.0.1:$(cat "$S/port")/healthz"; }

# Registers the simulator with Prometheus' file-based discovery (written atomically).
register() {
  mkdir -p "$(dirname "$TARGET")"
  printf '[{"targets": ["127.0.0.1:%s"]}]\n' "$1" >"$TARGET.tmp"
  mv "$TARGET.tmp" "$TARGET"
}

up() {
  mkdir -p "$S"
  exec 9>"$S/.lock"; flock 9
  "$ROOT/hack/cluster.sh" up
  say "building serin (cargo build ${SERIN_FEATURES[*]})"
  (cd "$ROOT" && cargo build --locked --quiet "${SERIN_FEATURES[@]}" --bin serin)
  if alive "$S/simulator.pid" && [ "$S/simulator.pid" -nt "$BIN" ] &&
    [ "$S/simulator.pid" -nt "$KUBECONFIG_FILE" ] && healthy >/dev/null 2>&1; then
    register "$(cat "$S/port")"
    say "simulator already running (log $S/simulator.log)"; return 0
  fi
  stop_pid simulator "$S/simulator.pid"
  local port; port=$(free_port)
  echo "$port" >"$S/port"
  start_bg simulator "$S/simulator.pid" "$S/simulator.log" "$BIN" simulate \
    --listen "127.0.0.1:$port" --kubeconfig "$KUBECONFIG_FILE"
  wait_for simulator "$S/simulator.log" 30 healthy
  register "$port"
  say "simulator up at http://127.0.0.1:$port/metrics (scraped by the local Prometheus)"
}

down() {
  [ -d "$S" ] || return 0
  exec 9>"$S/.lock"; flock 9
  rm -f "$TARGET"
  stop_pid simulator "$S/simulator.pid"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
