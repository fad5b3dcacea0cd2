# A moto server on loopback for the AWS integration tests. Sourced, not run:
#
#   source scripts/moto.sh
#   moto_start            # needs $VENV with moto[server] (tests/requirements.txt)
#   cargo test ...        # tests read LAGO_MOTO_ENDPOINT; without it they skip
#   moto_stop
#
# The server listens on a free port of 127.0.0.1 only and is stopped by moto_stop (or when the
# calling shell exits, if it trapped EXIT to moto_stop). Its log is $MOTO_LOG.

moto_start() {
  local py port i
  py="${VENV:?moto_start: VENV is not set (source scripts/env.sh and run ensure_venv)}/bin/python"
  # Ask the kernel for a free port, then give it to moto.
  port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
  MOTO_LOG="${MOTO_LOG:-${TMPDIR:-/tmp}/lago-moto-$port.log}"
  # moto's server, serving one request at a time (see the script for why).
  "$py" "$(dirname "${BASH_SOURCE[0]}")/moto_server.py" -H 127.0.0.1 -p "$port" >"$MOTO_LOG" 2>&1 &
  MOTO_PID=$!
  for i in $(seq 1 150); do
    if "$py" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" >/dev/null 2>&1; then
      break
    fi
    if ! kill -0 "$MOTO_PID" 2>/dev/null; then
      echo "moto server failed to start (log: $MOTO_LOG):" >&2
      cat "$MOTO_LOG" >&2
      unset MOTO_PID
      return 1
    fi
    if [ "$i" -eq 150 ]; then
      echo "moto server did not answer on 127.0.0.1:$port within 30 s (log: $MOTO_LOG)" >&2
      moto_stop
      return 1
    fi
    sleep 0.2
  done
  export MOTO_PID MOTO_LOG
  export LAGO_MOTO_ENDPOINT="http://127.0.0.1:$port"
  # Dummy credentials and a region for the SDK clients the tests build (moto accepts any).
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
  echo "== moto server on $LAGO_MOTO_ENDPOINT (pid $MOTO_PID)"
}

moto_stop() {
  if [ -n "${MOTO_PID:-}" ]; then
    kill "$MOTO_PID" 2>/dev/null || true
    # A server busy with a large request may not stop at once: give it 5 s, then kill it.
    for _ in $(seq 1 25); do
      kill -0 "$MOTO_PID" 2>/dev/null || break
      sleep 0.2
    done
    kill -9 "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
    unset MOTO_PID
  fi
  unset LAGO_MOTO_ENDPOINT
}
