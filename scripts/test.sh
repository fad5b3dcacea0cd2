#!/usr/bin/env bash
# Runs every test of lago with all set-up included: formatting and lints, the Rust unit and
# integration tests, and the interop tests that read lago's Parquet with pyarrow and DuckDB.
source "$(dirname "$0")/env.sh"
cd "$ROOT"

if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
ensure_venv

echo "== format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== Rust tests"
cargo test --workspace --locked

echo "== interop tests (pyarrow, DuckDB)"
cargo build -p lago --locked
LAGO_BIN="$CARGO_TARGET_DIR/debug/lago" "$VENV/bin/python" -m pytest -q tests/python
