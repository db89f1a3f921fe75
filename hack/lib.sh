# Shared helpers for the local-environment scripts (sourced, not run).
# shellcheck shell=bash
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/versions.env
source "$ROOT/hack/versions.env"
CACHE=${SERIN_CACHE:-$HOME/.cache/serin}
STATE=$ROOT/.serin
K8S_BIN=$CACHE/kubernetes-$K8S_VERSION-$(printf %s "$K8S_BINARIES" | sha256sum | cut -c1-8)/bin
ETCD_BIN=$CACHE/etcd-$ETCD_VERSION/bin
KWOK_DIR=$CACHE/kwok-$KWOK_VERSION
PROM_BIN=$CACHE/prometheus-deb/bin
# The cargo features of every build of Serin here: the local environment runs the dev tools
# (`serin simulate`, `serin demo-chart`). The same as the Makefile's CARGO_FEATURES, so that
# no script or test rebuilds target/*/serin with other features under a running Serin.
SERIN_FEATURES=(--features dev-tools)

say() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# free_port: a port nobody listens on right now (bind, read, close).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# alive PIDFILE: the process recorded in PIDFILE is running.
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# start NAME PIDFILE LOG CMD...: runs CMD detached in its own session, records its pid.
start_bg() {
  local name=$1 pidfile=$2 logfile=$3; shift 3
  # fd 9 is the caller's lock: a daemon must not inherit (and so hold) it.
  setsid "$@" >"$logfile" 2>&1 </dev/null 9>&- &
  echo $! >"$pidfile"
  say "started $name (pid $!, log $logfile)"
}

# wait_for WHAT LOG TIMEOUT CMD...: polls CMD every 0.5 s; on timeout names WHAT and LOG.
wait_for() {
  local what=$1 logfile=$2 timeout=$3; shift 3
  local deadline=$(( $(date +%s) + timeout )) next_note=$(( $(date +%s) + 10 ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      say "error: $what was not ready after ${timeout}s; last lines of $logfile:"
      tail -n 15 "$logfile" >&2 2>/dev/null || true
      die "$what did not become ready (read $logfile)"
    fi
    if [ "$(date +%s)" -ge "$next_note" ]; then
      say "waiting for $what…"; next_note=$(( $(date +%s) + 10 ))
    fi
    sleep 0.5
  done
}

# stop_pid NAME PIDFILE: stops the process we started (TERM, then KILL after 10 s).
stop_pid() {
  local name=$1 pidfile=$2 pid i
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
    say "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
}

# json_items: reads the JSON documents kubectl prints for several objects (`-o json`, one
# document after another, Lists among them) and prints them as one JSON array of objects.
json_items() {
  python3 -c '
import json, sys
text, docs, at = sys.stdin.read(), [], 0
decoder = json.JSONDecoder()
while text[at:].strip():
    doc, end = decoder.raw_decode(text[at:].lstrip())
    at = len(text) - len(text[at:].lstrip()) + end
    docs.extend(doc.get("items", [doc]))
print(json.dumps(docs))'
}
