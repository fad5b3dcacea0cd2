#!/usr/bin/env python3
"""Start-up of each function binary, next to the smallest Rust function built the same way.

For each binary, `--runs` times: start the process under a Lambda Runtime API served here on
loopback, and measure

- **init**: from starting the process to its first `GET …/invocation/next` (what Lambda bills as
  the init phase: the runtime, the configuration, the SDK clients and the function's own
  warm-up), and
- **first invocation**: from handing it its sample event (`events/`) to its answer,

each both in wall-clock time and in **CPU time** (all the process's threads, from
`/proc/<pid>/task/*/schedstat`, read when the request arrives): the CPU time holds no waiting at
all, neither for the stub nor for a core on a busy machine.

Every AWS call goes to a stub endpoint on loopback that answers at once with a client error (no
retry), so the figures hold no network round trip: they are what the code costs. Prints a table
(median and max over the runs) and the binaries' sizes; `--json` prints the figures as JSON.

Usage: scripts/startup.py --dir <release binaries> --hello <hello-lambda binary> [--runs 10]
(`scripts/startup.sh` builds both and runs this).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
ACCOUNT = "123456789012"

# Each function's sample event and the settings its configuration requires (the values are
# never reached: every AWS call goes to the stub).
FUNCTIONS: dict[str, tuple[Path | None, dict[str, str]]] = {
    "s3-landing": (
        EVENTS / "s3-landing" / "eventbridge-object-created.json",
        {"STATE_MACHINE_ARN": f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:lago-dev-ingest", "LAKE_BUCKET": "lago-lake-dev"},
    ),
    "transform": (
        EVENTS / "transform" / "task.json",
        {
            "LAKE_BUCKET": "lago-lake-dev",
            "PII_SALT_SECRET_ARN": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:lago/dev/pii-salt",
            "GLUE_DATABASE": "energy_processed_db_dev",
        },
    ),
    "start-crawler": (EVENTS / "start-crawler" / "status.json", {"CRAWLER_PREFIX": "lago-dev"}),
    "redshift-load": (
        EVENTS / "redshift-load" / "status.json",
        {
            "REDSHIFT_DATABASE": "dev",
            "REDSHIFT_WORKGROUP": "lago-dev",
            "REDSHIFT_COPY_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/lago-dev-redshift-copy",
        },
    ),
    "trades-history": (EVENTS / "trades-history-dated.json", {"LAKE_BUCKET": "lago-lake-dev"}),
    "trades-stream": (
        EVENTS / "kinesis-trades.json",
        {
            "PORTFOLIOS_TABLE": "lago-dev-portfolios",
            "DECISIONS_TABLE": "lago-dev-trade-decisions",
            "DEAD_LETTER_QUEUE_URL": f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/lago-dev-trades-dlq",
            "TRADES_TOPIC_ARN": f"arn:aws:sns:us-east-1:{ACCOUNT}:lago-dev-trade-events",
            "LAKE_BUCKET": "lago-lake-dev",
        },
    ),
}


class Stub(BaseHTTPRequestHandler):
    """Every AWS request: 400 and a validation error, which no SDK retries. `calls` holds when
    each arrived."""

    calls: list[float] = []

    def log_message(self, *_args: Any) -> None:
        pass

    def _answer(self) -> None:
        Stub.calls.append(time.perf_counter())
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = b'{"__type": "ValidationException", "message": "start-up measurement stub"}'
        self.send_response(400)
        self.send_header("content-type", "application/x-amz-json-1.0")
        self.send_header("x-amzn-errortype", "ValidationException")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer


class RuntimeApi:
    """One invocation's worth of the Lambda Runtime API, with timestamps."""

    def __init__(self) -> None:
        self.event: bytes = b"{}"
        self.first_next = threading.Event()
        self.answered = threading.Event()
        self.t_next = 0.0
        self.t_answer = 0.0
        self.cpu_next = 0.0
        self.cpu_answer = 0.0
        self.pid = 0
        self.outcome = ""
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if not self.path.endswith("/invocation/next"):
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if api.first_next.is_set():
                    # The next invocation never comes: the process is stopped first.
                    time.sleep(30)
                    return
                api.t_next = time.perf_counter()
                api.cpu_next = cpu_ms(api.pid)
                api.first_next.set()
                deadline = int((time.time() + 60) * 1000)
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", str(uuid.uuid4()))
                self.send_header("Lambda-Runtime-Deadline-Ms", str(deadline))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:startup")
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(api.event)))
                self.end_headers()
                self.wfile.write(api.event)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                if "/invocation/" in self.path and not api.answered.is_set():
                    api.t_answer = time.perf_counter()
                    api.cpu_answer = cpu_ms(api.pid)
                    api.outcome = "error" if self.path.endswith("/error") else "response"
                    api.answered.set()
                elif self.path.endswith("/init/error"):
                    api.outcome = "init error"
                    api.first_next.set()
                    api.answered.set()
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A process stopped while it waits for its next invocation resets that connection.
        self.server.handle_error = lambda *_args: None
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def cpu_ms(pid: int) -> float:
    """CPU time so far of every live thread of `pid`, in milliseconds (0 if unknown)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                pass
    except OSError:
        return 0.0
    return total / 1e6


def measure(binary: Path, event: bytes, settings: dict[str, str], stub: str) -> dict[str, Any]:
    api = RuntimeApi()
    api.event = event
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_FUNCTION_NAME": binary.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_LOG_LEVEL": "WARN",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "startup",
        "AWS_SECRET_ACCESS_KEY": "startup",
        "AWS_ENDPOINT_URL": stub,
        **settings,
    }
    Stub.calls.clear()
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api.pid = proc.pid
    try:
        if not api.first_next.wait(30):
            raise RuntimeError(f"{binary.name} never asked for an invocation")
        if not api.answered.wait(30):
            raise RuntimeError(f"{binary.name} never answered its invocation")
    finally:
        proc.kill()
        proc.wait()
        api.close()
    if api.outcome == "init error":
        raise RuntimeError(f"{binary.name} failed its init")
    init_calls = sum(1 for t in Stub.calls if t < api.t_next)
    return {
        "init_ms": (api.t_next - t0) * 1000,
        "init_aws_calls": init_calls,
        "first_invocation_ms": (api.t_answer - api.t_next) * 1000,
        "init_cpu_ms": api.cpu_next,
        "first_invocation_cpu_ms": api.cpu_answer - api.cpu_next,
        "outcome": api.outcome,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="the release binaries of the functions")
    parser.add_argument("--hello", type=Path, required=True, help="the hello-lambda binary")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    stub = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    stub.daemon_threads = True
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    stub_url = f"http://127.0.0.1:{stub.server_address[1]}"

    targets = [("hello-lambda", args.hello, b'{"hello": "event"}', {})]
    for name, (event, settings) in FUNCTIONS.items():
        targets.append((name, args.dir / name, event.read_bytes() if event else b"{}", settings))
    # Round robin, so that a busy spell of the machine falls on every binary alike.
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in targets}
    for _ in range(args.runs):
        for name, binary, event, settings in targets:
            runs[name].append(measure(binary, event, settings, stub_url))
    results = []
    for name, binary, _event, _settings in targets:
        mine = runs[name]
        init = [r["init_ms"] for r in mine]
        first = [r["first_invocation_ms"] for r in mine]
        results.append(
            {
                "function": name,
                "bytes": binary.stat().st_size,
                "init_ms_median": statistics.median(init),
                "init_ms_max": max(init),
                "init_cpu_ms_median": statistics.median(r["init_cpu_ms"] for r in mine),
                "first_invocation_ms_median": statistics.median(first),
                "first_invocation_ms_max": max(first),
                "first_invocation_cpu_ms_median": statistics.median(r["first_invocation_cpu_ms"] for r in mine),
                "init_aws_calls": mine[-1]["init_aws_calls"],
                "answer": mine[-1]["outcome"],
            }
        )
    stub.shutdown()
    hello = results[0]
    for r in results:
        r["init_vs_hello"] = r["init_ms_median"] / hello["init_ms_median"]
        r["init_cpu_vs_hello"] = r["init_cpu_ms_median"] / hello["init_cpu_ms_median"]
    if args.json:
        print(json.dumps({"runs": args.runs, "results": results}, indent=2))
        return
    print(
        f"{'function':<16}{'size MiB':>9}{'init ms':>9}{'(max)':>7}{'× hello':>8}{'init CPU ms':>12}{'× hello':>8}"
        f"{'AWS calls':>10}{'1st call ms':>12}{'CPU ms':>8}  answer"
    )
    for r in results:
        print(
            f"{r['function']:<16}{r['bytes'] / 2**20:>9.1f}{r['init_ms_median']:>9.1f}{r['init_ms_max']:>7.1f}"
            f"{r['init_vs_hello']:>8.2f}{r['init_cpu_ms_median']:>12.2f}{r['init_cpu_vs_hello']:>8.2f}"
            f"{r['init_aws_calls']:>10}{r['first_invocation_ms_median']:>12.1f}"
            f"{r['first_invocation_cpu_ms_median']:>8.2f}  {r['answer']}"
        )

if __name__ == "__main__":
    main()
