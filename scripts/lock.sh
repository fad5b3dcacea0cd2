#!/usr/bin/env bash
# Regenerates tests/requirements.txt (every transitive package pinned, with hashes, for every
# platform) from the direct pins in tests/requirements.in. Run it after changing a pin.
source "$(dirname "$0")/env.sh"
cd "$ROOT"
TOOLS="$LAGO_CACHE/lock-tools"
if [ ! -x "$TOOLS/bin/uv" ]; then
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
fi
"$TOOLS/bin/uv" pip compile tests/requirements.in --generate-hashes --universal \
  --python-version "$LAGO_MIN_PYTHON" --custom-compile-command "scripts/lock.sh" \
  -o tests/requirements.txt
