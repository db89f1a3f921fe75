#!/usr/bin/env bash
# Serin's own image, built without a registry or a container engine: what the Dockerfile's
# final stage ships, assembled by hand as an OCI image layout.
#
#   hack/image.sh build           the release binary, then the image; prints its reference
#   hack/image.sh import SOCKET   build, then import into the containerd at SOCKET (k8s.io)
#   hack/image.sh ref             print the reference of the image last built
#
# The Dockerfile builds for musl on Alpine, which links statically. Neither Alpine nor the
# musl target can be fetched here, so the binary is built for x86_64-unknown-linux-gnu with
# glibc linked statically (`-C target-feature=+crt-static`): like the Dockerfile's, it needs
# no file from the image but the CA bundle. Since glibc 2.34 the `files` and `dns` name
# services are part of libc itself, so name lookups work in a static binary on an empty base.
# The build has no cargo features, as the Dockerfile's (no dev tools).
#
# The image holds exactly the Dockerfile's final stage (FROM scratch):
#   /etc/ssl/certs/ca-certificates.crt   the host's CA bundle (Debian's ca-certificates)
#   /usr/local/bin/serin                 the binary
#   /usr/local/bin/kubectl-serin         the same binary again, the kubectl plugin's name
# with user 65532:65532, ports 8443/tcp and 8080/tcp, entrypoint /usr/local/bin/serin and
# cmd `run`. The reference is serin.local/serin:<version>-<first 12 hex of the binary's
# sha256>, so each new binary is a new tag and a Deployment pointing at it rolls.
# tests/e2e_in_cluster.rs compares the image with the Dockerfile.
#
# Output: .serin/image/ (image.tar, ref). A cold release build takes 5-10 minutes on 2 cores.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
OUT=$STATE/image
TARGET=x86_64-unknown-linux-gnu
BIN=$ROOT/target/$TARGET/release/serin
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

# static ELF: no PT_INTERP program header (no dynamic loader asked for).
is_static() {
  python3 - "$1" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read(1 << 16)
assert data[:4] == b"\x7fELF" and data[4] == 2, "not a 64-bit ELF"
phoff, = struct.unpack_from("<Q", data, 0x20)
phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
sys.exit(1 if 3 in types else 0)   # 3 = PT_INTERP
PY
}

build() {
  mkdir -p "$OUT"
  [ -r "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE (install Debian's ca-certificates)"
  say "building the release binary for $TARGET with glibc linked statically (cold: 5-10 minutes on 2 cores)"
  local t0; t0=$(date +%s)
  # The linker's warning about getaddrinfo in static binaries is the one explained above.
  local beat
  (while sleep 30; do say "release build: still compiling ($(( $(date +%s) - t0 ))s)"; done) & beat=$!
  # Run from a test (cargo test), the environment carries cargo's and rustup's variables for
  # the test; the build must not see them, or it differs from the last one and starts over.
  local unset=() v
  for v in $(compgen -e); do
    case $v in CARGO_HOME|RUSTUP_HOME) ;; CARGO*|RUST*|OUT_DIR|LD_LIBRARY_PATH|__CARGO*) unset+=(-u "$v") ;; esac
  done
  (cd "$ROOT" && env "${unset[@]}" RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet --release --locked --target "$TARGET" --bin serin 2>&1 |
    { grep -v -e 'getaddrinfo' -e 'requires at runtime the shared libraries' -e 'warning: Using' || true; } >&2) ||
    { kill "$beat" 2>/dev/null; die "the release build failed"; }
  kill "$beat" 2>/dev/null || true
  is_static "$BIN" || die "$BIN asks for a dynamic loader; it must be static"
  local version sum ref
  version=$("$BIN" --version | awk '{print $2}')
  sum=$(sha256sum "$BIN" | cut -c1-12)
  ref=serin.local/serin:$version-$sum
  if [ "$(cat "$OUT/ref" 2>/dev/null)" != "$ref" ] || [ ! -f "$OUT/image.tar" ]; then
    # The Dockerfile's three COPY lines and the directories they create (root, 0755); the
    # PATH is the one Docker gives an image built FROM scratch (the binary needs none).
    python3 "$ROOT/hack/oci.py" --out "$OUT/image.tar.tmp" --ref "$ref" \
      --user 65532:65532 --port 8443/tcp --port 8080/tcp \
      --entrypoint '["/usr/local/bin/serin"]' --cmd '["run"]' \
      --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --history "hack/image.sh (the Dockerfile's final stage)" \
      --dir etc:755 --dir etc/ssl:755 --dir etc/ssl/certs:755 \
      --dir usr:755 --dir usr/local:755 --dir usr/local/bin:755 \
      --file "$CA_BUNDLE:etc/ssl/certs/ca-certificates.crt:644" \
      --file "$BIN:usr/local/bin/serin:755" --file "$BIN:usr/local/bin/kubectl-serin:755"
    mv "$OUT/image.tar.tmp" "$OUT/image.tar"
    echo "$ref" >"$OUT/ref"
  fi
  say "image $ref ($(( $(stat -c %s "$OUT/image.tar") / 1024 / 1024 )) MiB uncompressed, built in $(( $(date +%s) - t0 ))s): $OUT/image.tar"
}

import() {
  local sock=$1 ref
  build
  ref=$(cat "$OUT/ref")
  if ctr --address "$sock" -n k8s.io images check "name==$ref" 2>/dev/null | grep -q complete; then
    say "$ref already in the node's containerd"; return 0
  fi
  ctr --address "$sock" -n k8s.io images import --no-unpack=false "$OUT/image.tar" >/dev/null
  say "imported $ref into the node's containerd"
}

case ${1:-} in
  build) build; cat "$OUT/ref" ;;
  import) [ -n "${2:-}" ] || die "usage: $0 import SOCKET"; import "$2" ;;
  ref) cat "$OUT/ref" 2>/dev/null || die "no image built yet (hack/image.sh build)" ;;
  *) echo "usage: $0 build | import SOCKET | ref" >&2; exit 2 ;;
esac
