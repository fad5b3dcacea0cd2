#!/usr/bin/env bash
# The README's first command: builds lago (the same build the tests use) and runs `lago demo` on
# embedded defaults. Arguments go to `lago demo` (e.g. `--size medium --open`).
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/build.sh"
cd "$ROOT"

if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
echo "== build (dev profile, $CARGO_TARGET_DIR)" >&2
lago_build
exec "$CARGO_TARGET_DIR/debug/lago" demo "$@"
