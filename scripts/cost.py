#!/usr/bin/env python3
"""What one file costs to ingest, from measured runs of the real function binaries.

Usage
-----
    # release builds of the functions and of lago (without the warehouse), the test venv
    LAGO_FUNCTIONS_DIR=<release dir> LAGO_BIN=<release dir>/lago \\
        .venv/bin/python scripts/cost.py [--sizes 1,10,100,1000] [--moto-max-mb 1000]
        [--trades 100,1000] [--volume 3000] [--out bench-out]

(`scripts/cost.sh` builds both and runs this.)

What it does
------------
1. Generates `transacciones` CSVs of each --sizes MB (1 MB = 10^6 bytes, 1 % dirty rows) with
   `lago generate`.
2. Starts a moto server behind the router of the infrastructure tests (tests/infra), deploys the
   real ingest ASL in moto's interpreter, and for each size up to --moto-max-mb: puts the file in
   raw/, hands s3-landing (its real binary behind a loopback Lambda Runtime API) the EventBridge
   event, and lets the execution run the real transform (task, verify, register) and
   redshift-load (submit, status) binaries. For every invocation it measures the wall time, the
   CPU time of the function's process (user + system, /proc/<pid>/stat, all threads) and its
   peak RSS (VmHWM, reset before the call). The transform runs at 1 thread (TRANSFORM_THREADS=1),
   as on a Lambda of at most 1,769 MB; the largest file is transformed again at 2 threads for the
   sizes above. Every request the functions and the interpreter send is counted by operation; the
   state transitions are counted from the execution's history (one per state entered).
3. Runs the same ingest without the warehouse, the current ASL with 1–3 load polls and the ASL
   before the crawler was taken off the per-file path (scripted answers: the path, not the work,
   decides the transitions), and counts their transitions.
4. Runs `lago transform` (the same transform code, on a local folder) on each file at 1 and 2
   threads: at the sizes also run through moto it shows the CLI and the function agree in CPU
   time; above --moto-max-mb it gives the CPU time (scaled by the function ÷ CLI ratio measured).
5. Runs trades-stream's real binary on Kinesis batches of --trades records against DynamoDB, SQS,
   SNS and S3 in moto.
6. Prices it all (list prices below, us-east-1, arm64), models each function's duration and cost
   against MemorySize, prints the tables of docs/cost.md and writes them to <out>/cost.md, and
   everything measured to <out>/cost.json.

The measuring machine is not a Lambda: its CPU is not Graviton, its storage is moto on loopback
(a Python process competing for the same cores, no network latency). docs/cost.md says what that
means for the figures.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parent.parent
# The measurement reuses scripts/bench.py and the infrastructure tests' harness (tests/infra).
HARNESS = [str(ROOT / "scripts"), str(ROOT / "tests" / "infra")]

MB = 1_000_000
MIB = 1 << 20
LOAD_DATE = "2026-11-28"
# The commit whose ingest ASL started the processed crawler for every file (the change after it
# registers the partition instead).
BEFORE_COMMIT = "9fb7989777a93cf4868dfc2be5e4cc5b20c49409^"

# --------------------------------------------------------------------------------------------
# Prices: list prices, us-east-1, checked on the AWS pricing pages on the date in docs/cost.md.
# Money is Decimal, rounded half up only when printed.
# --------------------------------------------------------------------------------------------

PRICES = {
    "lambda_gb_second_arm64": Decimal("0.0000133334"),
    "lambda_request": Decimal("0.20") / 1_000_000,
    "lambda_ephemeral_gb_second": Decimal("0.0000000309"),  # /tmp above the 512 MB included
    "sfn_transition": Decimal("0.025") / 1_000,
    "s3_write_request": Decimal("0.005") / 1_000,  # PUT, COPY, POST, LIST
    "s3_read_request": Decimal("0.0004") / 1_000,  # GET, HEAD and the rest
    "glue_catalog_request": Decimal("1") / 1_000_000,  # above the free tier of 1 M a month
    "glue_dpu_hour": Decimal("0.44"),
    "sns_publish": Decimal("0.50") / 1_000_000,
    "dynamodb_write_unit": Decimal("0.625") / 1_000_000,  # on demand
    "dynamodb_read_unit": Decimal("0.125") / 1_000_000,
    "sqs_request": Decimal("0.40") / 1_000_000,
    "logs_ingested_gb": Decimal("0.50"),
}
# The state machine logs every history event (level ALL, without execution data); moto writes no
# such log, so its size is an assumption: an event's JSON without data, with the execution ARN.
SFN_LOG_EVENT_BYTES = 400
CRAWLER_DPU, CRAWLER_MINIMUM_SECONDS = 1, 600
GLUE_JOB_DPU, GLUE_JOB_MINIMUM_SECONDS = 2, 60
# Lambda gives one vCPU's worth of CPU time at 1,769 MB, in proportion below and above, up to
# six at 10,240 MB.
ONE_VCPU_MB, MAX_VCPUS = 1769, 6
# Lambda's memory sizes the curves are computed at (MB), and those the printed tables show.
MEMORY_SIZES = (128, 256, 384, 512, 768, 1024, 1536, 1769, 2048, 3008, 3538, 4096, 5308, 7076, 10240)
SHOWN_SIZES = (128, 256, 384, 512, 1024, 1769, 3008, 4096, 10240)

# S3 operations by price class; DELETE and abort requests are free.
S3_WRITES = {
    "PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
    "CompleteMultipartUpload", "ListObjects", "ListObjectsV2", "ListParts", "ListMultipartUploads",
    "CreateBucket",
}
S3_FREE = {"DeleteObject", "AbortMultipartUpload"}


def usd(x: Decimal, places: int = 7) -> str:
    return "$" + format(x.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP), "f")


def lambda_cost(seconds: float, memory_mb: int, invocations: int = 1, ephemeral_mb: int = 512) -> Decimal:
    """One invocation's charge: duration rounded up to the millisecond × GB configured, the
    ephemeral storage above the 512 MB included for as long, plus the request."""
    duration = Decimal(math.ceil(seconds * 1000)) / 1000
    gb_s = duration * Decimal(memory_mb) / 1024
    storage_gb_s = duration * Decimal(max(ephemeral_mb - 512, 0)) / 1024
    return (gb_s * PRICES["lambda_gb_second_arm64"] + storage_gb_s * PRICES["lambda_ephemeral_gb_second"]
            + PRICES["lambda_request"]) * invocations


def glue_run_cost(dpu: int, seconds: float, minimum_seconds: int) -> Decimal:
    """A Glue job or crawler run: DPU-hours billed per second above the minimum."""
    billed = Decimal(max(math.ceil(seconds), minimum_seconds))
    return PRICES["glue_dpu_hour"] * dpu * billed / 3600


def crawler_run_cost(seconds: float = 0) -> Decimal:
    return glue_run_cost(CRAWLER_DPU, seconds, CRAWLER_MINIMUM_SECONDS)


def glue_job_run_cost(seconds: float = 0) -> Decimal:
    return glue_run_cost(GLUE_JOB_DPU, seconds, GLUE_JOB_MINIMUM_SECONDS)


def s3_class(operation: str) -> str:
    """'write', 'read' or 'free': the S3 request price class of an operation."""
    if operation in S3_FREE:
        return "free"
    return "write" if operation in S3_WRITES else "read"


def requests_cost(counts: dict[str, int]) -> dict[str, Decimal]:
    """Prices counted requests, keyed `s3:<Operation>`, `glue:<Operation>`, `sns:<Action>`,
    `dynamodb:<unit kind>` (`write_units`, `read_units`), `sqs:<Action>`; others are free."""
    out: dict[str, Decimal] = Counter()
    for key, n in counts.items():
        service, _, op = key.partition(":")
        if service == "s3":
            kind = s3_class(op)
            if kind != "free":
                out["s3"] += PRICES[f"s3_{kind}_request"] * n
        elif service == "glue" and op in ("BatchCreatePartition", "CreatePartition", "GetPartitions", "GetTable"):
            out["glue"] += PRICES["glue_catalog_request"] * n
        elif service == "sns" and op in ("Publish", "PublishBatch"):
            out["sns"] += PRICES["sns_publish"] * n
        elif service == "dynamodb" and op in ("write_units", "read_units"):
            out["dynamodb"] += PRICES[f"dynamodb_{op[:-1]}"] * n
        elif service == "sqs" and op in ("SendMessage", "SendMessageBatch"):
            out["sqs"] += PRICES["sqs_request"] * n
    return dict(out)


def transitions(events: Iterable[dict[str, Any]]) -> int:
    """State transitions of an execution as Step Functions bills them: one per state entered
    (`TaskStateEntered`, `ChoiceStateEntered`, `ParallelStateEntered`, …, inside branches too)."""
    return sum(1 for e in events if e["type"].endswith("StateEntered"))


def states_entered(events: Iterable[dict[str, Any]]) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in events if e["type"].endswith("StateEntered")]


def cpu_share(memory_mb: int) -> float:
    """vCPUs' worth of CPU time Lambda gives a function of this size."""
    return min(memory_mb / ONE_VCPU_MB, MAX_VCPUS)


def modelled_seconds(cpu_s: float, wait_s: float, memory_mb: int, parallelism: float = 1.0) -> float:
    """Duration at `memory_mb`: the CPU time spread over at most `parallelism` cores, each
    getting the share of CPU time the size buys, plus the measured wait that is not CPU (I/O).
    Single-threaded work: cpu × 1769 / min(M, 1769) + wait."""
    return wait_s + cpu_s / min(cpu_share(memory_mb), parallelism)


def smallest_fitting(peak_rss_bytes: int, headroom: float = 2.0) -> int:
    """The smallest Lambda size (of MEMORY_SIZES) holding the peak RSS `headroom` times."""
    need = peak_rss_bytes * headroom / MIB
    return next(m for m in MEMORY_SIZES if m >= need)


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads, live and ended."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Metered:
    """A function's RuntimeApi as a router handler that records each invocation's wall time,
    process CPU time and peak RSS, by action."""

    def __init__(self, function: str, runtime: Any, log: list[dict[str, Any]], running: set[str]):
        self.function, self.runtime, self.log, self.running = function, runtime, log, running

    def __call__(self, payload: Any) -> Any:
        action = payload.get("action", "task") if isinstance(payload, dict) else "task"
        if "Records" in (payload or {}) or "detail" in (payload or {}):
            action = "event"
        label = f"{self.function}:{action}"
        pid = self.runtime.proc.pid
        log0 = os.path.getsize(self.runtime.log.name)
        self.runtime.reset_peak_rss()
        cpu0, t0 = process_cpu_seconds(pid), time.perf_counter()
        self.running.add(label)
        try:
            return self.runtime(payload)
        finally:
            wall, cpu1 = time.perf_counter() - t0, process_cpu_seconds(pid)
            self.running.discard(label)
            self.log.append({
                "function": self.function, "action": action, "wall_s": wall, "cpu_s": cpu1 - cpu0,
                "peak_rss": self.runtime.peak_rss(), "log_bytes": os.path.getsize(self.runtime.log.name) - log0,
            })


class RequestCounter:
    """A router hook counting what the functions and the interpreter ask AWS for: S3 operations,
    JSON-protocol operations (`X-Amz-Target`), query-protocol actions (SNS, SQS), and DynamoDB
    capacity units of the items written and read."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def reset(self) -> Counter[str]:
        with self.lock:
            done, self.counts = self.counts, Counter()
        return done

    def __call__(self, request: Any) -> None:
        from router import s3_operation

        keys = []
        op = s3_operation(request)
        target = request.target
        if op:
            if op == "ListObjects" and "list-type" in request.query:
                op = "ListObjectsV2"
            keys.append(f"s3:{op}")
        elif target:
            service, _, operation = target.partition(".")
            service = {"AWSGlue": "glue", "AWSStepFunctions": "states", "secretsmanager": "secretsmanager"}.get(
                service, "dynamodb" if service.startswith("DynamoDB") else service.lower()
            )
            keys.append(f"{service}:{operation}")
            if service == "dynamodb":
                keys += dynamodb_units(operation, request.body)
        elif request.method == "POST" and request.body:
            form = urllib.parse.parse_qs(request.body.decode(errors="replace"))
            action = (form.get("Action") or [""])[0]
            if action:
                service = "sns" if "TopicArn" in form or "PublishBatchRequestEntries" in request.body.decode(errors="replace") else "sqs"
                keys.append(f"{service}:{action}")
        with self.lock:
            for key in keys:
                self.counts[key] += 1
        return None


def dynamodb_units(operation: str, body: bytes) -> list[str]:
    """Capacity units of a DynamoDB call as `dynamodb:write_units` / `read_units` markers (one per
    unit): transactional writes are 2 units per item of up to 1 KB, eventually consistent reads
    half a unit per item of up to 4 KB (items here are a few hundred bytes)."""
    try:
        req = json.loads(body or b"{}")
    except ValueError:
        return []
    if operation == "TransactWriteItems":
        return ["dynamodb:write_units"] * (2 * len(req.get("TransactItems", [])))
    if operation == "BatchWriteItem":
        return ["dynamodb:write_units"] * sum(len(v) for v in req.get("RequestItems", {}).values())
    if operation == "BatchGetItem":
        keys = sum(len(v.get("Keys", [])) for v in req.get("RequestItems", {}).values())
        return ["dynamodb:read_units"] * math.ceil(keys / 2)
    return []


def history(machine: Any, arn: str) -> list[dict[str, Any]]:
    events, token = [], None
    while True:
        kw = {"executionArn": arn, "maxResults": 1000, **({"nextToken": token} if token else {})}
        page = machine.sfn.get_execution_history(**kw)
        events += page["events"]
        token = page.get("nextToken")
        if not token:
            return events


def generate_csv(lago: str, size_mb: float, out: Path, bytes_per_row: float) -> dict[str, Any]:
    from bench import run_measured

    rows = max(1, round(size_mb * MB / bytes_per_row))
    r = run_measured(
        [lago, "generate", "--dataset", "transacciones", "--rows", str(rows), "--out", str(out), "--dirty", "1", "--json"],
        env=lago_env(),
        what="lago generate",
    )
    return json.loads(r["stdout"])


def lago_env() -> dict[str, str]:
    return {**os.environ, "LAGO_PII_SALT": "cost-salt", "LAGO_LOG": "warn"}


def cli_transform(lago: str, src: Path, work: Path, threads: int) -> dict[str, Any]:
    """`lago transform` on a local folder: wall, CPU (user + system) and peak RSS of the process."""
    from bench import run_lago

    r = run_lago(lago, src, work, threads, expect_rows=None)
    return {
        "threads": threads, "wall_s": r["seconds"], "cpu_s": r["cpu_seconds"], "peak_rss": r["rss_kib"] * 1024,
        "rows_in": r["rows"], "rows_ok": r["rows_ok"], "output_bytes": r["output_bytes"],
    }


class Pipeline:
    """The moto stack with the real functions, metered, and a request counter on the router."""

    def __init__(self, stack: Any, functions_dir: Path):
        self.stack, self.functions_dir = stack, functions_dir
        self.counter = RequestCounter()
        stack.router.on_request(self.counter)
        self.invocations: list[dict[str, Any]] = []
        self.running: set[str] = set()

    def start(self, *, warehouse: bool, threads: int = 1) -> dict[str, Any]:
        """The lake, the machine and the three functions, started and through their init: the
        requests of the init phase (once per execution environment) are kept apart."""
        from real_functions import start_functions
        from test_state_machine import FN

        self.counter.reset()
        run = start_functions(self.stack, self.functions_dir, warehouse=warehouse, env={"TRANSFORM_THREADS": str(threads)})
        for name in ("transform", "redshift-load"):
            self.stack.router.register(FN[name], Metered(name, run["runtimes"][name], self.invocations, self.running))
        run["landing"] = Metered("s3-landing", run["runtimes"]["s3-landing"], self.invocations, self.running)
        time.sleep(1.5)  # init takes ~10 ms and a warm-up request or two
        run["init_requests"] = dict(self.counter.reset())
        run["seen"], run["warehouse"] = set(), warehouse
        return run

    def ingest(self, run: dict[str, Any], path: Path, size_mb: float) -> dict[str, Any]:
        """One file through s3-landing and the ingest state machine of `run`; what each
        invocation cost, the requests sent, the transitions of the execution."""
        from boto3.s3.transfer import TransferConfig

        lake, machine = run["lake"], run["machine"]
        key = f"raw/transacciones/year=2026/month=11/day=28/ventas-{size_mb:g}mb-{uuid.uuid4().hex[:6]}.csv"
        # The producer's upload goes straight to moto: not counted, not the pipeline's cost.
        lake.s3.upload_file(str(path), lake.bucket, key, Config=TransferConfig(multipart_threshold=1 << 40))
        head = lake.s3.head_object(Bucket=lake.bucket, Key=key)
        self.counter.reset()
        del self.invocations[:]
        t0 = time.perf_counter()
        from real_functions import object_created

        landing = run["landing"](object_created(lake.bucket, key, head["ContentLength"], head["ETag"].strip('"')))
        assert landing["started"] == 1, landing
        desc = self.finished(run, timeout=1800)
        seconds = time.perf_counter() - t0
        assert desc["status"] == "SUCCEEDED", (desc, {n: r.logs()[-3000:] for n, r in run["runtimes"].items()})
        events = history(machine, desc["executionArn"])
        manifest_uri = json.loads(desc["output"])["transform"]["manifest"]
        manifest = json.loads(lake.get(manifest_uri.split("/", 3)[3]))
        return {
            "size_mb": size_mb, "bytes": head["ContentLength"], "warehouse": run["warehouse"],
            "seconds": seconds, "invocations": list(self.invocations), "requests": dict(self.counter.reset()),
            "transitions": transitions(events), "states": states_entered(events), "history_events": len(events),
            "rows_in": manifest["rows_in"], "rows_ok": manifest["rows_ok"],
            "output_bytes": sum(o["bytes"] for o in manifest["outputs"]["processed"]),
            "stages_ms": manifest.get("stages", {}),
            "task_input": json.loads(desc["input"]),
        }

    @staticmethod
    def finished(run: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The description of the one execution of `run` not seen before, once it has ended."""
        from real_functions import executions

        machine = run["machine"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = [e for e in executions(machine) if e["executionArn"] not in run["seen"]]
            if new and new[0]["status"] != "RUNNING":
                run["seen"].add(new[0]["executionArn"])
                return machine.sfn.describe_execution(executionArn=new[0]["executionArn"])
            time.sleep(0.1)
        raise AssertionError(f"the execution did not end in {timeout} s")

    def transform_again(self, run: dict[str, Any], task: dict[str, Any], threads: int) -> dict[str, Any]:
        """The transform task of a file already in the lake, once more, by a transform binary at
        `threads` threads (outputs are deterministic: they are overwritten)."""
        from router import RuntimeApi
        from test_state_machine import FN

        env = {**run["runtimes"]["transform"]._env, "TRANSFORM_THREADS": str(threads)}
        runtime = RuntimeApi(FN["transform"], [str(self.functions_dir / "transform")], env, timeout=1800)
        try:
            log: list[dict[str, Any]] = []
            Metered("transform", runtime, log, set())(task)
            return {**log[0], "threads": threads}
        finally:
            runtime.stop()

    @staticmethod
    def stop(run: dict[str, Any]) -> None:
        for runtime in run["runtimes"].values():
            runtime.stop()


def scripted_transitions(stack: Any, asl: Path, values: dict[str, str], handlers: dict[str, Any]) -> dict[str, Any]:
    """Transitions of one execution of `asl` whose Lambda tasks answer from scripts."""
    from executions import Deployed
    from test_state_machine import EXECUTION_INPUT

    for name, handler in handlers.items():
        stack.router.register(name, handler)
    run = Deployed(stack, asl, values).run(EXECUTION_INPUT, timeout=120)
    assert run.status == "SUCCEEDED", run.failure()
    return {"transitions": transitions(run.events), "states": states_entered(run.events)}


def path_transitions(stack: Any, work: Path) -> dict[str, Any]:
    """Transitions of the happy path, now (1–3 load polls) and before the crawler left the
    per-file path (1–4 crawler polls), with and without the warehouse."""
    from executions import lambda_arn
    from router import by_action, scripted
    from support import STATEMACHINES
    from test_state_machine import FINISHED, FN, REGISTERED, STARTED_STMT, SUBMITTED, TRANSFORM_OK, VERIFIED

    transform = by_action({None: scripted([TRANSFORM_OK]), "verify": scripted([VERIFIED]), "register": scripted([REGISTERED])})
    out: dict[str, Any] = {"now": {}, "before": {}}
    now = {"TransformFunctionArn": lambda_arn(FN["transform"]), "RedshiftLoadFunctionArn": lambda_arn(FN["redshift-load"]),
           "LoadPollSeconds": "0", "LoadMaxPolls": "10"}
    for warehouse, polls in ((False, 0), (True, 1), (True, 2), (True, 3)):
        load = by_action({"submit": scripted([SUBMITTED]), "status": scripted([STARTED_STMT] * (polls - 1) + [FINISHED])})
        values = {**now, "WarehouseEnabled": "true" if warehouse else "false"}
        out["now"][f"load_polls={polls}"] = scripted_transitions(
            stack, STATEMACHINES / "ingest.asl.json", values, {FN["transform"]: transform, FN["redshift-load"]: load})

    old = work / "ingest-before.asl.json"
    old.write_bytes(subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE_COMMIT}:statemachines/ingest.asl.json"],
                                   check=True, capture_output=True).stdout)
    crawler_fn = "lago-test-start-crawler"
    started = {"state": "started", "started_at": "2025-05-10T00:00:00Z"}
    running = {"state": "RUNNING", "last_crawl": None}
    ready = {"state": "READY", "last_crawl": {"status": "SUCCEEDED"}}
    for warehouse, crawler_polls in ((False, 1), (False, 3), (False, 4), (True, 3)):
        crawler = by_action({"start": scripted([started]), "status": scripted([running] * (crawler_polls - 1) + [ready])})
        load = by_action({"submit": scripted([SUBMITTED]), "status": scripted([FINISHED])})
        values = {**now, "WarehouseEnabled": "true" if warehouse else "false", "StartCrawlerFunctionArn": lambda_arn(crawler_fn),
                  "CrawlerPollSeconds": "0", "CrawlerMaxPolls": "10"}
        out["before"][f"warehouse={str(warehouse).lower()},crawler_polls={crawler_polls}"] = scripted_transitions(
            stack, old, values, {FN["transform"]: transform, FN["redshift-load"]: load, crawler_fn: crawler})
    stack.router.handlers.clear()
    return out


def trades_batches(stack: Any, functions_dir: Path, lago: str, sizes: list[int], work: Path, counter: RequestCounter) -> list[dict[str, Any]]:
    """trades-stream's real binary on Kinesis batches of each size, against moto."""
    from conftest import ACCOUNT
    from router import RuntimeApi

    suffix = uuid.uuid4().hex[:8]
    ddb, sqs, sns, s3 = (stack.client(s) for s in ("dynamodb", "sqs", "sns", "s3"))
    tables = {"PORTFOLIOS_TABLE": (f"lago-cost-portfolios-{suffix}", "user_id"), "DECISIONS_TABLE": (f"lago-cost-decisions-{suffix}", "trade_id")}
    for name, key in tables.values():
        ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": key, "KeyType": "HASH"}])
    bucket = f"lago-cost-trades-{suffix}"
    s3.create_bucket(Bucket=bucket)
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{stack.router.port}",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
        "AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "WARN",
        **{k: v[0] for k, v in tables.items()},
        "DEAD_LETTER_QUEUE_URL": sqs.create_queue(QueueName=f"lago-cost-dlq-{suffix}")["QueueUrl"],
        "TRADES_TOPIC_ARN": sns.create_topic(Name=f"lago-cost-trade-events-{suffix}")["TopicArn"],
        "LAKE_BUCKET": bucket,
    }
    runtime = RuntimeApi("lago-cost-trades-stream", [str(functions_dir / "trades-stream")], env, timeout=600)
    out = []
    try:
        template = json.loads((ROOT / "events" / "kinesis-trades.json").read_text(encoding="utf-8"))["Records"][0]
        sequence = 49656733331405069471539893837530498733542391530190258178
        for i, n in enumerate(sizes):
            lines = work / f"trades-{n}.ndjson"
            subprocess.run([lago, "trades", "generate", "--trades", str(n), "--users", str(max(1, n // 2)), "--seed", str(100 + i),
                            "--out", str(lines)], check=True, capture_output=True, env=lago_env())
            records = []
            for line in lines.read_text(encoding="utf-8").splitlines():
                trade = json.loads(line)
                sequence += 1
                rec = json.loads(json.dumps(template))
                rec["kinesis"].update({"partitionKey": trade["user_id"], "sequenceNumber": str(sequence),
                                       "data": base64.b64encode(line.encode()).decode()})
                rec["eventID"] = f"shardId-000000000000:{sequence}"
                records.append(rec)
            log: list[dict[str, Any]] = []
            counter.reset()
            result = Metered("trades-stream", runtime, log, set())({"Records": records})
            assert not result.get("batchItemFailures"), result
            out.append({"records": n, **log[0], "requests": dict(counter.reset())})
    finally:
        runtime.stop()
    return out



# --------------------------------------------------------------------------------------------
# Model and report
# --------------------------------------------------------------------------------------------

# What "reasonable latency" means when choosing a size: the transform of the largest file
# measured within a quarter of its 900 s timeout (room for a slower core and a slower network);
# every other call within a second.
TRANSFORM_LATENCY_BOUND_S = 225.0
CALL_LATENCY_BOUND_S = 1.0
# Peak RSS × this must fit the size: the transform's peak on the same 1 GB file varied by about
# 10 % between runs (chunks and parts in flight), and the other datasets' wider rows were not
# measured.
RSS_HEADROOM = 2.5
# trades-stream's wall time against moto is moto's DynamoDB (one Python process applying one
# transaction at a time, copying the table to roll back), not DynamoDB's: its duration is modelled
# as its CPU time plus one round trip of this length per wave of concurrent calls (transactions
# STORE_CONCURRENCY at a time, each BatchGetItem, the archive PUT and the notifications).
ROUND_TRIP_S = 0.010
STORE_CONCURRENCY = 64


def trades_wait_seconds(requests: dict[str, int]) -> float:
    waves = math.ceil(requests.get("dynamodb:TransactWriteItems", 0) / STORE_CONCURRENCY)
    return ROUND_TRIP_S * (waves + requests.get("dynamodb:BatchGetItem", 0) + 1)


def template_sizes(prop: str = "MemorySize") -> dict[str, int]:
    """Each function's MemorySize (or EphemeralStorage size) in template.yaml, by binary name."""
    from support import resources

    out = {}
    for res in resources("AWS::Serverless::Function").values():
        binary = res.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        if binary:
            value = res["Properties"].get(prop, {"Size": 512})
            out[binary] = int(value["Size"] if isinstance(value, dict) else value)
    return out


def call_seconds(call: dict[str, Any], memory_mb: int, two_threads: dict[str, Any] | None = None) -> float:
    """A measured invocation's modelled duration at `memory_mb`. Below one vCPU the CPU time
    stretches by 1769 / M and the wait (wall − CPU) stays; from one vCPU up the measured wall
    time stands, or with `two_threads` (the same call at 2 threads) the CPU time spread over the
    parallelism that run reached."""
    wait = max(call["wall_s"] - call["cpu_s"], 0.0)
    share = cpu_share(memory_mb)
    if share < 1:
        return wait + call["cpu_s"] / share
    if two_threads is None:
        return call["wall_s"]
    parallel = min(2.0, two_threads["cpu_s"] / max(two_threads["wall_s"] - wait, 1e-3))
    return min(call["wall_s"], wait + two_threads["cpu_s"] / min(share, parallel))


EPHEMERAL: dict[str, int] = {}  # set from template.yaml by main()


def calls_cost(calls: list[dict[str, Any]], memory: dict[str, int], two_threads: dict[str, Any] | None = None) -> Decimal:
    total = Decimal(0)
    for c in calls:
        tt = two_threads if (c["function"], c["action"]) == ("transform", "task") else None
        m = memory[c["function"]]
        total += lambda_cost(call_seconds(c, m, tt), m, ephemeral_mb=EPHEMERAL.get(c["function"], 512))
    return total


def file_costs(run: dict[str, Any], memory: dict[str, int], transitions_n: int, two_threads: dict[str, Any] | None = None) -> dict[str, Decimal]:
    """The charges of one file's ingest, by service."""
    out = {"lambda": calls_cost(run["invocations"], memory, two_threads), "step_functions": PRICES["sfn_transition"] * transitions_n}
    out.update(requests_cost(run["requests"]))
    out["logs"] = logs_cost(run)
    out["total"] = sum(out.values(), Decimal(0))
    return out


def logs_cost(run: dict[str, Any]) -> Decimal:
    """CloudWatch Logs ingestion: what the functions wrote (measured) and the state machine's
    events (estimated)."""
    written = sum(c.get("log_bytes", 0) for c in run["invocations"]) + SFN_LOG_EVENT_BYTES * run.get("history_events", 0)
    return PRICES["logs_ingested_gb"] * written / 10**9


def before_costs(now: dict[str, Decimal], run: dict[str, Any], memory: dict[str, int], transitions_n: int, crawler_polls: int) -> dict[str, Decimal]:
    """The same file when every file started the processed crawler and polled it: no register
    call and no BatchCreatePartition; a start and `crawler_polls` status calls of start-crawler
    (each priced as long as the measured redshift-load status call, one AWS call too) and one
    crawler run at its 10-minute minimum."""
    register = [c for c in run["invocations"] if c["action"] == "register"]
    status = [c for c in run["invocations"] if (c["function"], c["action"]) == ("redshift-load", "status")]
    proxy = status[0] if status else register[0]
    crawler_calls = [{**proxy, "function": "start-crawler"}] * (1 + crawler_polls)
    memory = {**memory, "start-crawler": memory.get("start-crawler", 128)}
    out = dict(now)
    out["lambda"] = now["lambda"] - calls_cost(register, memory) + calls_cost(crawler_calls, memory)
    out["glue"] = Decimal(0)
    out["step_functions"] = PRICES["sfn_transition"] * transitions_n
    out["crawler"] = crawler_run_cost()
    out.pop("total")
    out["total"] = sum(out.values(), Decimal(0))
    return out


def curve(calls: list[dict[str, Any]], function: str, two_threads: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Duration and cost of `calls` (one function's calls for one unit of work) at each size."""
    rows = []
    peak = max(c["peak_rss"] for c in calls)
    for m in MEMORY_SIZES:
        seconds = [call_seconds(c, m, two_threads if c["action"] == "task" else None) for c in calls]
        rows.append({
            "memory_mb": m, "vcpus": round(cpu_share(m), 3), "seconds": round(sum(seconds), 4),
            "longest_call_s": round(max(seconds), 4),
            "cost": sum((lambda_cost(s, m, ephemeral_mb=EPHEMERAL.get(function, 512)) for s in seconds), Decimal(0)),
            "fits": peak * RSS_HEADROOM <= m * MIB,
        })
    return rows


def choose(rows: list[dict[str, Any]], latency_bound: float) -> int:
    """The cheapest size that holds the peak RSS with headroom and keeps every call within the
    bound (ties: the smaller)."""
    ok = [r for r in rows if r["fits"] and r["longest_call_s"] <= latency_bound]
    return min(ok, key=lambda r: (r["cost"], r["memory_mb"]))["memory_mb"]


def machine() -> dict[str, Any]:
    from bench import machine_info

    return machine_info()


def jsonable(x: Any) -> Any:
    if isinstance(x, Decimal):
        return str(x)
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items() if not str(k).startswith("_")}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---:" if i else "---" for i in range(len(headers))) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description="Measured cost of ingesting a file (and a trades batch) with lago.")
    ap.add_argument("--sizes", default="1,10,100,1000", help="transacciones file sizes, MB (default 1,10,100,1000)")
    ap.add_argument("--moto-max-mb", type=float, default=1000,
                    help="largest size run through moto with the function binaries; larger ones by the CLI (default 1000)")
    ap.add_argument("--trades", default="100,1000", help="trades-stream batch sizes (default 100,1000)")
    ap.add_argument("--volume", type=int, default=3000, help="files a month, for the monthly figures (default 3000: 100 a day)")
    ap.add_argument("--trades-volume", type=int, default=10_000_000, help="trades a month (default 10 M)")
    ap.add_argument("--compare-transform-mb", type=int, default=4096,
                    help="a second transform MemorySize for the per-file Lambda cost (default 4096, the size before this model)")
    ap.add_argument("--out", type=Path, default=Path("bench-out"), help="results and work folder (default bench-out)")
    args = ap.parse_args()

    sys.path[:0] = HARNESS
    lago, fdir = os.environ.get("LAGO_BIN"), os.environ.get("LAGO_FUNCTIONS_DIR")
    if not lago or not fdir:
        print("error: set LAGO_BIN (release lago) and LAGO_FUNCTIONS_DIR (release function binaries); scripts/cost.sh does", file=sys.stderr)
        return 2
    functions_dir = Path(fdir)
    sizes = [float(s) for s in args.sizes.split(",") if s]
    trade_sizes = [int(s) for s in args.trades.split(",") if s]
    out = args.out.resolve()
    work = out / "cost-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    results: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
        "prices": PRICES, "template_memory": template_sizes(), "template_ephemeral": template_sizes("EphemeralStorage"), "load_average_before": os.getloadavg()[0],
    }

    EPHEMERAL.update(results["template_ephemeral"])
    from conftest import running_stack

    # Inputs.
    pilot = work / "pilot.csv"
    rep = generate_csv(lago, 2, pilot, 85.0)
    bytes_per_row = rep["bytes"] / rep["rows"]
    files = {}
    for size in sizes:
        path = work / f"transacciones-{size:g}mb.csv"
        print(f"generating {path.name} …", flush=True)
        generate_csv(lago, size, path, bytes_per_row)
        files[size] = path

    runs: dict[float, dict[str, Any]] = {}
    with running_stack(work / "moto.log") as stack:
        pipeline = Pipeline(stack, functions_dir)
        through_moto = [s for s in sizes if s <= args.moto_max_mb]
        smallest, largest = min(through_moto), max(through_moto)
        run = pipeline.start(warehouse=True)
        try:
            # The first file meets cold functions (first connections): measured, kept apart.
            print(f"ingesting {smallest:g} MB with cold functions …", flush=True)
            cold = pipeline.ingest(run, files[smallest], smallest)
            for size in through_moto:
                print(f"ingesting {size:g} MB through moto …", flush=True)
                runs[size] = pipeline.ingest(run, files[size], size)
                r = runs[size]
                print(f"  {r['seconds']:.1f} s, {r['transitions']} transitions, "
                      + ", ".join(f"{c['function']}:{c['action']} {c['wall_s']:.3f}s/{c['cpu_s']:.2f}cpu/{c['peak_rss'] / MIB:.0f}MiB"
                                  for c in r["invocations"]), flush=True)
            task_input = runs[largest]["task_input"]
            payload = {k: task_input[k] for k in ("bucket", "key", "version_id", "etag", "size", "dataset", "load_date")}
            print(f"the {largest:g} MB file's transform again at 2 threads …", flush=True)
            runs[largest]["transform_2_threads"] = pipeline.transform_again(run, payload, 2)
        finally:
            Pipeline.stop(run)
        init_requests = run["init_requests"]
        print("ingesting without the warehouse …", flush=True)
        run = pipeline.start(warehouse=False)
        try:
            pipeline.ingest(run, files[smallest], smallest)
            bare = pipeline.ingest(run, files[smallest], smallest)
        finally:
            Pipeline.stop(run)
        print("transitions of the other paths …", flush=True)
        stack.router.hooks.clear()
        paths = path_transitions(stack, work)
        stack.router.on_request(pipeline.counter)
        print("trades-stream batches …", flush=True)
        trades = trades_batches(stack, functions_dir, lago, trade_sizes, work, pipeline.counter)

    print("lago transform (CLI) …", flush=True)
    cli = {size: {t: cli_transform(lago, files[size], work, t) for t in (1, 2)} for size in sizes}
    shutil.rmtree(work, ignore_errors=True)

    results.update({"runs": {f"{k:g}": v for k, v in runs.items()}, "cold": cold, "init_requests": init_requests, "no_warehouse": bare, "paths": paths, "trades": trades,
                    "cli": {f"{k:g}": v for k, v in cli.items()}})
    results["report"] = report(results, runs, bare, paths, trades, cli, sizes, args)
    results["seconds"] = time.monotonic() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "cost.json").write_text(json.dumps(jsonable(results), indent=2), encoding="utf-8")
    (out / "cost.md").write_text(results["report"] + "\n", encoding="utf-8")
    print(results["report"])
    print(f"\nwrote {out / 'cost.json'} in {results['seconds']:.0f} s")
    return 0


def report(results: dict[str, Any], runs: dict[float, dict[str, Any]], bare: dict[str, Any], paths: dict[str, Any],
           trades: list[dict[str, Any]], cli: dict[float, dict[int, dict[str, Any]]], sizes: list[float], args: Any) -> str:
    """The tables of docs/cost.md, and the figures behind them into `results`."""
    memory = results["template_memory"]
    parts: list[str] = [f"Measured {results['date']} on {results['machine']['cpu']} ({results['machine']['cores']} cores)."]
    largest = max(runs)
    two = runs[largest].get("transform_2_threads")

    # 1. The invocations.
    rows = [[f"{results['cold']['size_mb']:g} MB, cold", f"{c['function']} {c['action']}", f"{c['wall_s']:.3f}", f"{c['cpu_s']:.2f}",
             f"{c['peak_rss'] / MIB:.1f}"] for c in results["cold"]["invocations"]]
    for size, run in runs.items():
        for c in run["invocations"]:
            rows.append([f"{size:g} MB", f"{c['function']} {c['action']}", f"{c['wall_s']:.3f}", f"{c['cpu_s']:.2f}", f"{c['peak_rss'] / MIB:.1f}"])
    if two:
        rows.append([f"{largest:g} MB", "transform task, 2 threads", f"{two['wall_s']:.3f}", f"{two['cpu_s']:.2f}", f"{two['peak_rss'] / MIB:.1f}"])
    parts.append("### Each invocation, measured\n\n" + md_table(["file", "function, action", "wall s", "CPU s", "peak RSS MiB"], rows))

    # 2. The CLI beside the function.
    rows = []
    for size in sizes:
        c1, c2 = cli[size][1], cli[size][2]
        fn = next((c for c in runs[size]["invocations"] if c["action"] == "task"), None) if size in runs else None
        rows.append([f"{size:g} MB", f"{c1['rows_in']:,}", f"{c1['wall_s']:.2f}", f"{c1['cpu_s']:.2f}", f"{c1['peak_rss'] / MIB:.1f}",
                     f"{c2['wall_s']:.2f}", f"{c2['cpu_s']:.2f}", f"{c2['peak_rss'] / MIB:.1f}",
                     f"{fn['cpu_s']:.2f}" if fn else "–", f"{fn['cpu_s'] / c1['cpu_s']:.2f}" if fn and min(fn["cpu_s"], c1["cpu_s"]) >= 0.05 else "–"])
    parts.append("### `lago transform` beside the function's transform task\n\n" + md_table(
        ["file", "rows", "CLI 1 thread wall s", "CPU s", "peak RSS MiB", "CLI 2 threads wall s", "CPU s", "peak RSS MiB", "function 1 thread CPU s", "function ÷ CLI"], rows))

    # 3. Transitions.
    warehouse_n, bare_n = runs[largest]["transitions"], bare["transitions"]
    rows = [["now, real functions, warehouse (1 load poll)", warehouse_n], ["now, real functions, no warehouse", bare_n]]
    rows += [[f"now, scripted, {k}", v["transitions"]] for k, v in paths["now"].items()]
    rows += [[f"before, scripted, {k}", v["transitions"]] for k, v in paths["before"].items()]
    parts.append("### State transitions per file (states entered in the execution history)\n\n" + md_table(["path", "transitions"], rows))
    results["happy_path_states"] = {"warehouse": runs[largest]["states"], "no_warehouse": bare["states"]}

    # 4. Requests.
    keys = sorted({k for r in runs.values() for k in r["requests"]} | set(bare["requests"]))
    rows = [[k] + [runs[s]["requests"].get(k, 0) for s in runs] + [bare["requests"].get(k, 0)] for k in keys]
    parts.append("### Requests per file\n\n" + md_table(["request"] + [f"{s:g} MB" for s in runs] + [f"{min(runs):g} MB, no warehouse"], rows))

    # 5. Cost per file.
    before_polls = 3
    before_n = {w: paths["before"][f"warehouse={w},crawler_polls={before_polls}"]["transitions"] for w in ("true", "false")}
    glue_design = glue_job_run_cost() + crawler_run_cost()
    goal = glue_job_run_cost() / 100
    rows, costs = [], {}
    for size, run in runs.items():
        now_w = file_costs(run, memory, warehouse_n, two if size == largest else None)
        now_bare = dict(now_w)
        now_bare.pop("total")
        load_calls = [c for c in run["invocations"] if c["function"] == "redshift-load"]
        # Without the warehouse: no redshift-load calls, fewer transitions, history events and
        # requests (the difference measured on the smallest file).
        now_bare["lambda"] -= calls_cost(load_calls, memory)
        now_bare["step_functions"] = PRICES["sfn_transition"] * bare_n
        fewer = {k: n - bare["requests"].get(k, 0) for k, n in runs[min(runs)]["requests"].items()}
        for service, saved in requests_cost(fewer).items():
            now_bare[service] -= saved
        now_bare["logs"] -= logs_cost({"invocations": load_calls, "history_events": run["history_events"] - bare["history_events"]})
        now_bare["total"] = sum(now_bare.values(), Decimal(0))
        before_w = before_costs(now_w, run, memory, before_n["true"], before_polls)
        costs[f"{size:g}"] = {"now_warehouse": now_w, "now_no_warehouse": now_bare, "before_warehouse": before_w, "glue_job_design_at_least": glue_design}
        previous = file_costs(run, {**memory, "transform": args.compare_transform_mb}, warehouse_n, two if size == largest else None)
        costs[f"{size:g}"]["now_warehouse_transform_at_compared_size"] = previous
        rows.append([f"{size:g} MB", usd(now_w["lambda"]), usd(previous["lambda"]), usd(now_w["step_functions"]), usd(now_w.get("s3", Decimal(0))),
                     usd(now_w.get("glue", Decimal(0)) + now_w.get("sns", Decimal(0))), usd(now_w["logs"]), usd(now_w["total"]), usd(now_bare["total"]),
                     usd(before_w["total"], 5), usd(glue_design, 5), f"{glue_job_run_cost() / now_w['total']:.0f}×"])
    results["costs"] = costs
    parts.append(f"### Cost per file (MemorySize as in template.yaml: {memory})\n\n" + md_table(
        ["file", "Lambda", f"Lambda, transform at {args.compare_transform_mb} MB", "Step Functions", "S3 requests", "Glue catalog + SNS", "logs", "now, warehouse", "now, no warehouse",
         f"before (crawler, {before_polls} polls)", "Glue-job design, at least", "one Glue job run ÷ now"], rows))
    hundred = costs.get("100")
    if hundred:
        for kind in ("now_warehouse", "now_no_warehouse"):
            total = hundred[kind]["total"]
            rest = total - hundred[kind]["step_functions"]
            results.setdefault("goal", {})[kind] = {
                "total": total, "goal": goal, "met": total <= goal, "ratio_to_one_glue_job": glue_job_run_cost() / total,
                "transitions_that_fit": int(max(Decimal(0), goal - rest) / PRICES["sfn_transition"]),
            }
        parts.append("### The goal: a 100 MB file for at most one Glue job run ÷ 100 = " + usd(goal) + "\n\n" + md_table(
            ["path", "per file", "one Glue job run ÷ this", "met", "transitions that would fit"],
            [[k, usd(v["total"]), f"{v['ratio_to_one_glue_job']:.1f}×", "yes" if v["met"] else "no", v["transitions_that_fit"]]
             for k, v in results["goal"].items()]))

    # 6. A month.
    rows = []
    for size, c in costs.items():
        rows.append([f"{size} MB", f"{args.volume:,}", usd(c["now_warehouse"]["total"] * args.volume, 2), usd(c["now_no_warehouse"]["total"] * args.volume, 2),
                     usd(c["before_warehouse"]["total"] * args.volume, 2), usd(glue_design * args.volume, 2)])
    parts.append("### A month\n\n" + md_table(["files of", "files a month", "now, warehouse", "now, no warehouse", "before", "Glue-job design, at least"], rows))

    # 7. The curves and the sizes they choose.
    curves, chosen = {}, {}
    for size in (s for s in runs if s >= 100 or s == largest):
        calls = [c for c in runs[size]["invocations"] if c["function"] == "transform"]
        curves[f"transform, {size:g} MB file"] = curve(calls, "transform", two if size == largest else None)
        if size == largest and two:
            curves[f"transform, {size:g} MB file, 1 thread"] = curve(calls, "transform")
    big = curves.get(f"transform, {largest:g} MB file, 1 thread") or curves[f"transform, {largest:g} MB file"]
    chosen["transform"] = choose(big, TRANSFORM_LATENCY_BOUND_S)
    for function, actions in (("s3-landing", ("event",)), ("redshift-load", ("submit", "status"))):
        calls = [c for c in runs[largest]["invocations"] if c["function"] == function and c["action"] in actions]
        curves[function] = curve(calls, function)
        chosen[function] = choose(curves[function], CALL_LATENCY_BOUND_S)
    for t in trades:
        t["modelled_wall_s"] = t["cpu_s"] + trades_wait_seconds(t["requests"])
        modelled = {**t, "function": "trades-stream", "action": "batch", "wall_s": t["modelled_wall_s"]}
        curves[f"trades-stream, {t['records']} records"] = curve([modelled], "trades-stream")
    # trades-stream's size is not chosen here: its wall time against moto is moto's DynamoDB
    # (a Python process applying one transaction at a time), not DynamoDB's, and its latency
    # budget is in docs/trades.md.
    results["curves"], results["chosen_memory"] = curves, chosen
    for name, rows_ in curves.items():
        if name.endswith(", 1 thread"):
            continue
        one = curves.get(f"{name}, 1 thread")
        if one:
            parts.append(f"### {name} (task, verify, register): duration and cost by MemorySize\n\n" + md_table(
                ["MB", "vCPUs", "1 thread: seconds", "cost", "2 threads: seconds", "cost", f"peak RSS × {RSS_HEADROOM:g} fits (1 thread)"],
                [[r["memory_mb"], r["vcpus"], f"{o['seconds']:.3f}", usd(o["cost"], 8),
                  f"{r['seconds']:.3f}" if r["memory_mb"] > ONE_VCPU_MB else "–", usd(r["cost"], 8) if r["memory_mb"] > ONE_VCPU_MB else "–",
                  "yes" if o["fits"] else "no"] for r, o in zip(rows_, one) if r["memory_mb"] in SHOWN_SIZES]))
            continue
        parts.append(f"### {name}: duration and cost by MemorySize\n\n" + md_table(
            ["MB", "vCPUs", "seconds", "cost", f"peak RSS × {RSS_HEADROOM:g} fits"],
            [[r["memory_mb"], r["vcpus"], f"{r['seconds']:.3f}", usd(r["cost"], 8), "yes" if r["fits"] else "no"]
             for r in rows_ if r["memory_mb"] in SHOWN_SIZES]))
    parts.append("### MemorySize: the rule's choice beside template.yaml\n\n" + md_table(
        ["function", "chosen", "template.yaml"], [[f, m, memory.get(f, "–")] for f, m in chosen.items()]))

    # 8. Trades.
    rows = []
    for t in trades:
        lam = lambda_cost(call_seconds({**t, "wall_s": t["modelled_wall_s"]}, memory["trades-stream"]), memory["trades-stream"])
        req = requests_cost(t["requests"])
        per_batch = lam + sum(req.values(), Decimal(0))
        rows.append([t["records"], f"{t['wall_s']:.3f}", f"{t['cpu_s']:.2f}", f"{t['modelled_wall_s']:.3f}", f"{t['peak_rss'] / MIB:.1f}", usd(lam, 8),
                     usd(sum(req.values(), Decimal(0)), 8), usd(per_batch, 8), usd(per_batch * args.trades_volume / t["records"], 2)])
        t["cost"] = {"lambda": lam, **req, "per_batch": per_batch}
    parts.append(f"### trades-stream, per batch (MemorySize {memory['trades-stream']} MB) and a month of {args.trades_volume:,} trades\n\n" + md_table(
        ["records", "wall s (moto)", "CPU s", "modelled wall s at 1 vCPU", "peak RSS MiB", "Lambda", "requests", "per batch", "a month"], rows))
    parts.append("Requests per batch: " + "; ".join(f"{t['records']}: " + ", ".join(f"{k} {v}" for k, v in sorted(t["requests"].items())) for t in trades))
    return "\n\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
