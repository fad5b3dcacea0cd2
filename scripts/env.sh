# Shared set-up for the scripts: the build directory and the pinned Python venv.
# Sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAGO_CACHE="${LAGO_CACHE:-$HOME/.cache/lago}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$LAGO_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The test tools come from tests/requirements.txt, a lock with every transitive package pinned and
# hashed (regenerate it from tests/requirements.in with scripts/lock.sh); pip refuses anything whose
# hash differs. The lock is resolved for this Python and later.
LAGO_MIN_PYTHON="3.11"

# A venv per lock: changing tests/requirements.txt builds a new one.
ensure_venv() {
  local pins hash
  if ! command -v python3 >/dev/null; then
    echo "python3 (>= $LAGO_MIN_PYTHON) is required for the test tools" >&2
    exit 1
  fi
  if ! python3 -c "import sys; sys.exit(0 if sys.version_info >= tuple(map(int, '$LAGO_MIN_PYTHON'.split('.'))) else 1)"; then
    echo "python3 is $(python3 -c 'import platform; print(platform.python_version())'); the test tools need Python >= $LAGO_MIN_PYTHON" >&2
    exit 1
  fi
  pins="$ROOT/tests/requirements.txt"
  hash="$(sha256sum "$pins" | cut -c1-12)"
  VENV="$LAGO_CACHE/venv-$hash"
  if [ ! -x "$VENV/bin/python" ] || [ ! -f "$VENV/.complete" ]; then
    echo "== setting up the Python venv ($VENV)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r "$pins"
    touch "$VENV/.complete"
  fi
  export VENV
}
