#!/usr/bin/env bash
# Checks the dependency graph with cargo-deny against deny.toml: licences, banned and
# duplicate crates, and where crates come from. cargo-deny is built once from crates.io
# (`cargo install --locked`, pinned below) into ~/.cache/serin/cargo-deny-<version>/ with a
# `.complete` marker written last, like the components of hack/deps.sh; a lock keeps two
# checkouts from building it at once. The cold build took 948 s (about 16 minutes) on 2 busy cores.
#
# The advisories check is not run: its database is a git repository that cannot be fetched
# from here (see deny.toml).
#
#   hack/deny.sh            cargo deny check licenses bans sources
#   hack/deny.sh path       print the cached binary's path (building it if needed)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
CARGO_DENY_VERSION=0.20.2
DIR=$CACHE/cargo-deny-$CARGO_DENY_VERSION
BIN=$DIR/bin/cargo-deny

install() {
  [ -f "$DIR/.complete" ] && return 0
  mkdir -p "$CACHE"
  exec 7>"$CACHE/.cargo-deny.lock"
  if ! flock -n 7; then
    say "another checkout is building cargo-deny; waiting for it"
    flock 7
  fi
  [ -f "$DIR/.complete" ] && return 0
  say "building cargo-deny $CARGO_DENY_VERSION from crates.io (once; about 16 minutes on 2 busy cores; cargo prints each crate it compiles)"
  rm -rf "$DIR"
  cargo install --locked "cargo-deny@$CARGO_DENY_VERSION" --root "$DIR" >&2
  "$BIN" --version >/dev/null
  touch "$DIR/.complete"
}

install
case ${1:-check} in
  path) echo "$BIN" ;;
  check)
    cd "$ROOT"
    # Duplicate versions are warnings (deny.toml); their inclusion graphs would fill the log.
    "$BIN" --locked check --hide-inclusion-graph licenses bans sources
    ;;
  *) echo "usage: $0 [check|path]" >&2; exit 2 ;;
esac
