# The one build of the workspace that both README commands use (sourced, not run): the dev
# profile (dependencies optimised, see Cargo.toml) into $CARGO_TARGET_DIR, every target, with
# clippy as the compiler of the workspace's crates and warnings as errors. `make demo` and
# `make test` run exactly this, so whichever comes first compiles DuckDB's C++ and the dependency
# graph and the other reuses it: the same targets and environment resolve the same features and
# fingerprints (a narrower build such as `-p lago-cli` unifies features differently and compiles
# DuckDB again).
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver || true)"
if [ -z "$RUSTC_WORKSPACE_WRAPPER" ]; then
  echo "clippy is required: rustup component add clippy" >&2
  exit 1
fi
export RUSTC_WORKSPACE_WRAPPER
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

lago_build() {
  cargo build --workspace --all-targets --locked "$@"
}
