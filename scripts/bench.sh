#!/usr/bin/env bash
# Benchmarks lago's transform against DuckDB and pyarrow on the same generated file, and shows
# lago's peak memory at two input sizes. Arguments go to scripts/bench.py (e.g. --size-mb 200);
# with `--history` first, the trade history against DuckDB (scripts/bench_history.py).
source "$(dirname "$0")/env.sh"
cd "$ROOT"
ensure_venv
cargo build --release -p lago-cli --no-default-features --locked
# `--history [...]`: the trade history against DuckDB instead (scripts/bench_history.py).
if [ "${1:-}" = "--history" ]; then
  shift
  LAGO_BIN="$CARGO_TARGET_DIR/release/lago" "$VENV/bin/python" scripts/bench_history.py "$@"
else
  LAGO_BIN="$CARGO_TARGET_DIR/release/lago" "$VENV/bin/python" scripts/bench.py "$@"
fi
