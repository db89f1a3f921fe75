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
    python3 - "$OUT/image.tar.tmp" "$ref" "$BIN" "$CA_BUNDLE" <<'PY'
import hashlib, io, json, sys, tarfile
out, ref, binary, bundle = sys.argv[1:]

def info(name, kind, mode, size=0):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.mtime, ti.uid, ti.gid = kind, mode, size, 0, 0, 0
    return ti

# The layer: what the Dockerfile's three COPY lines put in the scratch image, with the
# directories they create (owned by root, 0755, as COPY makes them).
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
    for d in ("etc", "etc/ssl", "etc/ssl/certs", "usr", "usr/local", "usr/local/bin"):
        t.addfile(info(d, tarfile.DIRTYPE, 0o755))
    ca = open(bundle, "rb").read()
    t.addfile(info("etc/ssl/certs/ca-certificates.crt", tarfile.REGTYPE, 0o644, len(ca)), io.BytesIO(ca))
    exe = open(binary, "rb").read()
    for name in ("usr/local/bin/serin", "usr/local/bin/kubectl-serin"):
        t.addfile(info(name, tarfile.REGTYPE, 0o755, len(exe)), io.BytesIO(exe))
layer = layer.getvalue()

blobs = {}
def blob(data, media):
    d = hashlib.sha256(data).hexdigest()
    blobs[d] = data
    return {"mediaType": media, "digest": "sha256:" + d, "size": len(data)}

layer_desc = blob(layer, "application/vnd.oci.image.layer.v1.tar")
config = {
    "architecture": "amd64", "os": "linux",
    "config": {
        "User": "65532:65532",
        "ExposedPorts": {"8443/tcp": {}, "8080/tcp": {}},
        # What a scratch image built by Docker carries; the binary needs no PATH itself.
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Entrypoint": ["/usr/local/bin/serin"],
        "Cmd": ["run"],
        "WorkingDir": "/",
    },
    "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    "history": [{"created_by": "hack/image.sh (the Dockerfile's final stage)"}],
}
config_desc = blob(json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc, "layers": [layer_desc]}
manifest_desc = blob(json.dumps(manifest, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json")
manifest_desc["annotations"] = {"io.containerd.image.name": ref,
                                "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [manifest_desc]}
with tarfile.open(out, "w") as t:
    def add(name, data, kind=tarfile.REGTYPE, mode=0o644):
        t.addfile(info(name, kind, mode, len(data)), io.BytesIO(data) if data else None)
    add("blobs", b"", tarfile.DIRTYPE, 0o755)
    add("blobs/sha256", b"", tarfile.DIRTYPE, 0o755)
    for d, data in blobs.items():
        add("blobs/sha256/" + d, data)
    add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    add("index.json", json.dumps(index, sort_keys=True).encode())
PY
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
