#!/usr/bin/env bash
# Container images for the real node, built without a registry: each is one static Go binary
# in a hand-written OCI image layout (one uncompressed layer, a config, a manifest,
# index.json), tarred, cached per version under ~/.cache/serin/images/<name>-<version>/, and
# imported into the node's containerd (namespace k8s.io). Pods use them with
# `imagePullPolicy: Never`.
#
#   hack/images.sh build             build what is missing; prints the image references
#   hack/images.sh import SOCKET     build, then import every image into the containerd at SOCKET
#   hack/images.sh refs              print the image references (name=reference), build nothing
#
# Images:
#   pause    a 30-line Go program (below) that waits for SIGTERM/SIGINT and reaps children;
#            the sandbox image of the node's containerd
#   podinfo  github.com/stefanprodan/podinfo/cmd/podinfo from the Go module proxy, at
#            PODINFO_MODULE_VERSION (versions.env); tagged with the version the binary reports
#   loadtester  Flagger's load tester (cmd/loadtester of github.com/fluxcd/flagger at
#            FLAGGER_VERSION) with `hey` (github.com/rakyll/hey at HEY_VERSION) beside it, and
#            a POSIX `sh` (Debian's busybox-static, downloaded, not installed): the load
#            tester runs each `cmd` task with `sh -c`. It runs as a pod because it listens on
#            every interface, which in a pod are only the bridge's.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
IMAGES=$CACHE/images
mkdir -p "$IMAGES"
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
REPO=serin.local

PAUSE_SRC='package main

// pause: the process that holds a pod sandbox'"'"'s namespaces. It exits on SIGTERM or SIGINT
// and reaps the children it inherits as PID 1.

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
'
PAUSE_VERSION=1-$(printf %s "$PAUSE_SRC" | sha256sum | cut -c1-8)

# oci_tar OUT REF USER PORT ENTRYPOINT FILE...: writes an OCI image layout tar to OUT whose one
# layer holds FILE... at /, /etc/passwd and /tmp (hack/oci.py).
oci_tar() {
  local out=$1 ref=$2 user=$3 port=$4 entry=$5 f files=()
  shift 5
  for f in "$@"; do files+=(--file "$f:$(basename "$f"):755"); done
  python3 "$ROOT/hack/oci.py" --out "$out" --ref "$ref" --user "$user" \
    ${port:+--port "$port/tcp"} --entrypoint "[\"$entry\"]" --env PATH=/ \
    --history hack/images.sh --dir etc:755 --dir tmp:1777 \
    --text "etc/passwd:644:root:x:0:0:root:/:/nonexistent
nobody:x:65534:65534:nobody:/:/nonexistent
" --text "etc/group:644:root:x:0:
nogroup:x:65534:
" "${files[@]}"
}

# locked_build DIR FN: runs FN DIR once per cache directory (flock; `.complete` written last).
locked_build() {
  local dir=$1 fn=$2
  [ -f "$dir/.complete" ] && return 0
  exec 7>"$dir.lock"
  if ! flock -n 7; then say "another build is filling $dir; waiting for it"; flock 7; fi
  if [ ! -f "$dir/.complete" ]; then
    rm -rf "$dir"; mkdir -p "$dir/bin"
    "$fn" "$dir"
    touch "$dir/.complete"
  fi
  exec 7>&-
}

build_pause() {
  local dir=$1
  say "pause $PAUSE_VERSION: building"
  mkdir -p "$dir/src"
  printf 'module serin.dev/localenv/pause\n\ngo 1.26.0\n' >"$dir/src/go.mod"
  printf '%s' "$PAUSE_SRC" >"$dir/src/main.go"
  (cd "$dir/src" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w" -o "$dir/bin/pause" .)
  oci_tar "$dir/image.tar" "$REPO/pause:$PAUSE_VERSION" 65534 "" /pause "$dir/bin/pause"
  echo "$REPO/pause:$PAUSE_VERSION" >"$dir/ref"
}

build_podinfo() {
  local dir=$1 t0 version
  t0=$(date +%s)
  say "podinfo $PODINFO_MODULE_VERSION: building from the Go module proxy (about 3 minutes cold)"
  CGO_ENABLED=0 GOBIN="$dir/bin" nice -n 10 go install -trimpath -ldflags "-s -w" \
    "github.com/stefanprodan/podinfo/cmd/podinfo@$PODINFO_MODULE_VERSION"
  version=$("$dir/bin/podinfo" --version)
  [ -n "$version" ] || die "podinfo --version printed nothing"
  oci_tar "$dir/image.tar" "$REPO/podinfo:$version" 65534 9898 /podinfo "$dir/bin/podinfo"
  echo "$REPO/podinfo:$version" >"$dir/ref"
  say "podinfo $version: built in $(( $(date +%s) - t0 ))s"
}

LOADTESTER_VERSION=${FLAGGER_VERSION#v}-hey${HEY_VERSION#v}

build_loadtester() {
  local dir=$1 t0 deb
  t0=$(date +%s)
  say "loadtester $LOADTESTER_VERSION: building Flagger's load tester and hey from the Go module proxy (about 2 minutes cold)"
  local module
  for module in "github.com/fluxcd/flagger/cmd/loadtester@$FLAGGER_VERSION" \
    "github.com/rakyll/hey@$HEY_VERSION"; do
    CGO_ENABLED=0 GOBIN="$dir/bin" nice -n 10 go install -trimpath -ldflags "-s -w" "$module"
  done
  mkdir -p "$dir/deb"
  (cd "$dir/deb" && apt-get -o APT::Sandbox::User=root download -q busybox-static >/dev/null) ||
    die "apt-get download busybox-static failed (is the Debian package index reachable?)"
  deb=$(ls "$dir"/deb/busybox-static_*.deb)
  dpkg-deb -x "$deb" "$dir/deb/root"
  cp "$dir/deb/root/bin/busybox" "$dir/bin/sh"
  "$dir/bin/sh" -c 'exit 0' || die "busybox sh does not run"
  oci_tar "$dir/image.tar" "$REPO/flagger-loadtester:$LOADTESTER_VERSION" 65534 8080 /loadtester \
    "$dir/bin/loadtester" "$dir/bin/hey" "$dir/bin/sh"
  echo "$REPO/flagger-loadtester:$LOADTESTER_VERSION" >"$dir/ref"
  echo "$(basename "$deb")" >"$dir/busybox.deb"
  rm -rf "$dir/deb"
  say "loadtester $LOADTESTER_VERSION: built in $(( $(date +%s) - t0 ))s"
}

dirs() {
  echo "pause=$IMAGES/pause-$PAUSE_VERSION podinfo=$IMAGES/podinfo-$PODINFO_MODULE_VERSION" \
    "loadtester=$IMAGES/loadtester-$LOADTESTER_VERSION"
}

build() {
  locked_build "$IMAGES/pause-$PAUSE_VERSION" build_pause
  locked_build "$IMAGES/podinfo-$PODINFO_MODULE_VERSION" build_podinfo
  locked_build "$IMAGES/loadtester-$LOADTESTER_VERSION" build_loadtester
}

refs() {
  local kv
  for kv in $(dirs); do
    [ -f "${kv#*=}/ref" ] && echo "${kv%%=*}=$(cat "${kv#*=}/ref")"
  done
  true
}

import() {
  local sock=$1 kv dir ref
  build
  for kv in $(dirs); do
    dir=${kv#*=}; ref=$(cat "$dir/ref")
    if ctr --address "$sock" -n k8s.io images check "name==$ref" 2>/dev/null | grep -q complete; then
      continue
    fi
    ctr --address "$sock" -n k8s.io images import --no-unpack=false "$dir/image.tar" >/dev/null
    say "imported $ref"
  done
}

case ${1:-} in
  build) build; refs ;;
  import) [ -n "${2:-}" ] || die "usage: $0 import SOCKET"; import "$2" ;;
  refs) refs ;;
  *) echo "usage: $0 build | import SOCKET | refs" >&2; exit 2 ;;
esac
