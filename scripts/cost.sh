#!/usr/bin/env bash
# What a file costs to ingest, measured on the real function binaries (scripts/cost.py; the
# method and the last figures: docs/cost.md). Arguments go to scripts/cost.py (e.g. --sizes 1,10).
# Builds release binaries of the functions and of lago (without the warehouse) first; about ten
# minutes on 2 cores once built. Not part of `make test`.
source "$(dirname "$0")/env.sh"
cd "$ROOT"
ensure_venv
cargo build --release --locked -p s3-landing -p transform -p redshift-load -p trades-stream
cargo build --release --locked -p lago-cli --no-default-features
LAGO_BIN="$CARGO_TARGET_DIR/release/lago" LAGO_FUNCTIONS_DIR="$CARGO_TARGET_DIR/release" \
  "$VENV/bin/python" scripts/cost.py "$@"
