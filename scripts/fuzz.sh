#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (all, or those named) for FUZZ_SECONDS each (default 60), on the
# nightly toolchain with cargo-fuzz (installed when missing). Builds go to
# $LAGO_CACHE/fuzz-target (the sanitizer flags would otherwise rebuild the main build) and what a
# run discovers to $LAGO_CACHE/fuzz-corpus/<target>; the committed corpus, fuzz/corpus/<target>,
# seeds every run and is only changed by hand. A crash is saved in fuzz/artifacts/<target>/:
# once fixed, copy it into fuzz/corpus/<target>/ so `make test` replays it.
# Usage: scripts/fuzz.sh [target...]
source "$(dirname "$0")/env.sh"
cd "$ROOT"

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$LAGO_CACHE/fuzz-target}"
FUZZ_CORPUS_DIR="${FUZZ_CORPUS_DIR:-$LAGO_CACHE/fuzz-corpus}"
# Not the main build's directory, whatever the environment says.
unset CARGO_TARGET_DIR

if ! cargo +nightly --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

failed=()
for target in "${targets[@]}"; do
  # The CSV targets read files up to 64 KiB (the transform's first read); the others keep
  # libFuzzer's default, the largest seed.
  case "$target" in
    transform_csv | chunker) max_len=(-max_len=65536) ;;
    *) max_len=() ;;
  esac
  mkdir -p "$FUZZ_CORPUS_DIR/$target"
  # 2 GiB of memory: a crash's backtrace is symbolized in the process, under AddressSanitizer.
  echo "== fuzz $target (${FUZZ_SECONDS}s)"
  if ! cargo +nightly fuzz run --target-dir "$FUZZ_TARGET_DIR" "$target" \
    "$FUZZ_CORPUS_DIR/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -timeout=60 "${max_len[@]}"; then
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
