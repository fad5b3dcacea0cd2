#!/usr/bin/env bash
# Runs every test of lago with all set-up included: formatting and lints, the Rust unit and
# integration tests (the AWS adapters against a moto server on loopback), the interop tests that
# read lago's Parquet with pyarrow and DuckDB, the demo and its dashboard in headless Chromium, and
# the infrastructure checks (template lints, the state machine executed in moto).
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/moto.sh"
source "$(dirname "$0")/build.sh"
cd "$ROOT"

if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
ensure_venv

# Headless Chromium renders the dashboard in the tests (Debian's package).
if [ -z "${LAGO_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing chromium"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is required for the dashboard test: install Debian's chromium package or set LAGO_CHROMIUM" >&2
    exit 1
  fi
fi

echo "== format"
cargo fmt --all --check

# Clippy lints every target of the workspace while it is compiled for the tests, with warnings as
# errors: one build instead of `cargo clippy`'s separate check build, which would compile DuckDB's
# C++ a second time. It is the build `make demo` makes, so after the demo nothing compiles again.
echo "== build with lints (clippy, -D warnings)"
lago_build

echo "== Rust tests (AWS adapters against moto on loopback)"
moto_start
trap moto_stop EXIT
LAGO_REQUIRE_MOTO=1 cargo test --workspace --locked
moto_stop

echo "== interop, demo and dashboard tests (pyarrow, DuckDB, Chromium)"
# The binaries come from the build above (a build of only `--bins` would resolve features without
# the dev-dependencies and rebuild half the dependency tree).
export LAGO_BIN="$CARGO_TARGET_DIR/debug/lago"
"$VENV/bin/python" -m pytest -q tests/python

# sam build cross-compiles the functions for Lambda's arm64.
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  rustup target add aarch64-unknown-linux-gnu
fi

echo "== infrastructure tests (lints, state machine and end to end in moto, sam build for arm64)"
LAGO_FUNCTIONS_DIR="$CARGO_TARGET_DIR/debug" LAGO_SAM_BUILD="${LAGO_SAM_BUILD:-1}" \
  "$VENV/bin/python" -m pytest -q -rP tests/infra
