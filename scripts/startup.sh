#!/usr/bin/env bash
# Builds the function binaries and the hello-world baseline in release mode (this machine's
# architecture, lago's release profile) and measures their start-up: scripts/startup.py.
# Usage: scripts/startup.sh [--runs N] [--json]
source "$(dirname "$0")/env.sh"
cd "$ROOT"

cargo build --release --locked --bins \
  -p s3-landing -p transform -p start-crawler -p redshift-load -p trades-history -p trades-stream
HELLO_TARGET_DIR="${HELLO_TARGET_DIR:-$LAGO_CACHE/hello-target}"
cargo build --release --locked --manifest-path bench/hello-lambda/Cargo.toml --target-dir "$HELLO_TARGET_DIR"

python3 scripts/startup.py --dir "$CARGO_TARGET_DIR/release" --hello "$HELLO_TARGET_DIR/release/hello-lambda" "$@"
