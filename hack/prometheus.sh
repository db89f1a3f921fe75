#!/usr/bin/env bash
# The local Prometheus (Debian's package, run as a plain process), scraping every second.
# Scrape targets are file-based: any JSON file dropped into .serin/prometheus/targets/
# ([{"targets": ["127.0.0.1:PORT"], "labels": {...}}]) is picked up within a second, which
# is how the traffic simulator, Traefik and the e2e tests register their exporters.
# The pods of the real node that ask for it (`prometheus.io/scrape: "true"`) are registered
# the same way by hack/podtargets.sh: Debian's Prometheus is built without Kubernetes
# service discovery.
#
#   hack/prometheus.sh up | down | url | bin
#
# `bin` prints the path of the Prometheus binary (fetched if needed), for tests that start an
# instance of their own (tests/e2e_prometheus_auth.rs: one behind TLS and basic auth).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
P=$STATE/prometheus

ready() { curl -fsS "$(cat "$P/url")/-/ready"; }

up() {
  mkdir -p "$P/targets"
  exec 9>"$P/.lock"; flock 9
  if alive "$P/prometheus.pid" && ready >/dev/null 2>&1; then
    say "prometheus already running at $(cat "$P/url")"; return 0
  fi
  stop_pid prometheus "$P/prometheus.pid"
  "$ROOT/hack/deps.sh" prometheus
  # The same port as last time when it is free: Serin was started with this URL.
  local port=""
  [ -f "$P/url" ] && port=$(sed 's/.*://' "$P/url")
  if [ -z "$port" ] || ! python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1])))' "$port" 2>/dev/null; then
    port=$(free_port)
  fi
  echo "http://127.0.0.1:$port" >"$P/url"
  cat >"$P/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
- job_name: serin-local
  honor_labels: true
  file_sd_configs:
  - files: ['$P/targets/*.json']
    refresh_interval: 1s
YML
  rm -rf "$P/data"
  start_bg prometheus "$P/prometheus.pid" "$P/prometheus.log" "$PROM_BIN/prometheus" \
    --config.file "$P/prometheus.yml" --storage.tsdb.path "$P/data" \
    --web.listen-address "127.0.0.1:$port" --storage.tsdb.retention.time 1d
  wait_for prometheus "$P/prometheus.log" 30 ready
  say "prometheus up at http://127.0.0.1:$port"
}

down() {
  [ -d "$P" ] || return 0
  exec 9>"$P/.lock"; flock 9
  stop_pid prometheus "$P/prometheus.pid"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  url) cat "$P/url" ;;
  bin) "$ROOT/hack/deps.sh" prometheus >/dev/null; echo "$PROM_BIN/prometheus" ;;
  *) echo "usage: $0 up|down|url|bin" >&2; exit 2 ;;
esac
