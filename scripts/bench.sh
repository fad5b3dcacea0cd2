#!/usr/bin/env bash
# Benchmarks lago's transform against DuckDB and pyarrow on the same generated file, and shows
# lago's peak memory at two input sizes. Arguments go to scripts/bench.py (e.g. --size-mb 200).
source "$(dirname "$0")/env.sh"
cd "$ROOT"
ensure_venv
cargo build --release -p lago-cli --no-default-features --locked
LAGO_BIN="$CARGO_TARGET_DIR/release/lago" "$VENV/bin/python" scripts/bench.py "$@"
