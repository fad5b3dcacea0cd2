# Shared set-up for the scripts: the build directory and the pinned Python venv.
# Sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAGO_CACHE="${LAGO_CACHE:-$HOME/.cache/lago}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$LAGO_CACHE/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# A venv per set of pins: changing tests/requirements.txt builds a new one.
ensure_venv() {
  local pins hash
  pins="$ROOT/tests/requirements.txt"
  hash="$(sha256sum "$pins" | cut -c1-12)"
  VENV="$LAGO_CACHE/venv-$hash"
  if [ ! -x "$VENV/bin/python" ] || [ ! -f "$VENV/.complete" ]; then
    echo "== setting up the Python venv ($VENV)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$pins"
    touch "$VENV/.complete"
  fi
  export VENV
}
