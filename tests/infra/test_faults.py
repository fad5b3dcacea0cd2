"""Faults and bursts, end to end: the real function binaries, the real ingest ASL, moto.

Each test starts the four functions behind Lambda Runtime APIs (`real_functions.launch`) with
every AWS call of theirs going through the router, which injects the fault (`on_request`):

- the transform **killed** (SIGKILL) while it uploads a Parquet part, then the file run again:
  nothing partial is visible meanwhile, the re-run writes the outputs and leaves no multipart
  upload open;
- a **GetObject cut mid-stream**: the transform resumes with a range request;
- **StartExecution throttled**: the SDK retries, and past its attempts the landing function
  fails `Retryable` so the event's redelivery starts the execution;
- a **burst** of 200 files, every event delivered twice, concurrently: 200 executions, each
  file's outputs written once;
- **pathological files** (one 200 MB line, NUL bytes, a header only, an empty file): each
  rejected whole with a reason, the transform's peak RSS measured for each.

Needs the function binaries: `LAGO_FUNCTIONS_DIR` (the test command builds them and sets it).
"""

from __future__ import annotations

import base64
import io
import json
import random
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow.parquet as pq
from boto3.s3.transfer import TransferConfig

from conftest import MotoStack
from executions import Deployed
from real_functions import Lake, executions, functions_dir, launch, object_created, wait_for_executions  # noqa: F401 (fixtures)
from support import resources
from test_state_machine import FN
from router import Answer, CutBody, FunctionError, Request, RuntimeApi, json_error, s3_operation

MIB = 1 << 20
HEADER = "id_transaccion;fecha_transaccion;tipo_transaccion;nombre_cliente_proveedor;cantidad_comprada;precio;tipo_energia\n"
ENERGY = ("eolica", "hidroelectrica", "nuclear", "solar", "termica", "biomasa", "geotermica")
# The transform's memory size in template.yaml (4096 MB), and the bound its peak RSS must stay under on a
# pathological file: the 64 MiB record cap and a chunk past it (the most the chunker holds, 65
# MiB), the multipart upload of the file's copy (a part filling, two in flight: 3 × 8 MiB; not at
# the same time as the former, counted anyway), and about 32 MiB of runtime, SDK clients and
# allocator arenas (the process holds about 50 MiB after a small file).
TRANSFORM_MEMORY_SIZE = int(resources()["TransformFunction"]["Properties"]["MemorySize"]) * MIB
PATHOLOGICAL_RSS_BOUND = 128 * MIB


def transacciones(rows: int, seed: int, prefix: str = "T") -> bytes:
    """A `transacciones` export of `rows` distinct, valid rows (values random enough that the
    Parquet is about 40 bytes a row)."""
    rnd = random.Random(seed)
    out = io.StringIO()
    out.write(HEADER)
    for i in range(rows):
        out.write(
            f"{prefix}-{i:08d};2026-11-{rnd.randint(1, 28):02d};{rnd.choice(('compra', 'venta'))};"
            f"Cliente {rnd.randint(1, 50_000)};{rnd.randint(1, 9_999_999)},{rnd.randint(0, 99):02d};"
            f"{rnd.randint(100, 999)},{rnd.randint(0, 9999):04d};{rnd.choice(ENERGY)}\n"
        )
    return out.getvalue().encode()


def put_raw(lake: Lake, key: str, body: bytes) -> dict[str, Any]:
    """Puts `body` in raw/ under `key`; returns the Object Created event S3 sends for it."""
    put = lake.s3.put_object(Bucket=lake.bucket, Key=key, Body=body)
    return object_created(lake.bucket, key, len(body), put["ETag"].strip('"'))


def only_manifest(lake: Lake) -> dict[str, Any]:
    """The manifest of the one file of `lake`."""
    [key] = lake.keys("manifests/")
    return json.loads(lake.get(key))


def open_uploads(lake: Lake) -> list[tuple[str, str]]:
    got = lake.s3.list_multipart_uploads(Bucket=lake.bucket)
    return sorted((u["Key"], u["UploadId"]) for u in got.get("Uploads", []))


def logged(runtime: RuntimeApi, message: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in runtime.logs().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == message]


def failure_of(machine: Deployed, execution: dict[str, Any]) -> tuple[str | None, str | None]:
    history = machine.sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)
    for e in history["events"]:
        if e["type"] == "TaskFailed":
            d = e["taskFailedEventDetails"]
            return d.get("error"), d.get("cause")
    return None, None


# --- the transform killed mid-upload, then run again ----------------------------------------


def test_a_transform_killed_mid_upload_leaves_nothing_visible_and_its_rerun_leaves_no_open_upload(stack: MotoStack, launch: Any) -> None:
    # GIVEN parts of 5 MiB and a file whose Parquet takes two of them
    run = launch(warehouse=False, env={"S3_PART_SIZE_MIB": "5"})
    lake: Lake = run["lake"]
    machine: Deployed = run["machine"]
    transform: RuntimeApi = run["runtimes"]["transform"]
    rows = 180_000
    body = transacciones(rows, seed=5)
    key = "raw/transacciones/year=2026/month=11/day=28/cierre mensual.csv"
    # … and a host that dies when the transform sends the second part of a processed object
    parts: Counter[str] = Counter()
    killed: list[str] = []

    def kill_at_second_part(request: Request) -> Answer | None:
        bucket, object_key = request.bucket_and_key
        if s3_operation(request) != "UploadPart" or bucket != lake.bucket or not object_key.startswith("processed/"):
            return None
        parts[object_key] += 1
        if not killed and parts[object_key] == 2:
            killed.append(object_key)
            transform.kill()
            return Answer(503, {}, b"")
        return None

    stack.router.on_request(kill_at_second_part)

    # WHEN the file lands and its transform is killed mid-upload
    run["runtimes"]["s3-landing"](put_raw(lake, key, body))
    [first] = wait_for_executions(machine, 1, timeout=180)

    # THEN the execution failed with the runtime's exit, and nothing of the file is visible …
    assert killed, "the transform never uploaded a second part: the file is too small to test this"
    assert first["status"] == "FAILED", first
    assert failure_of(machine, first)[0] == "Runtime.ExitError", failure_of(machine, first)
    for zone in ("processed/", "rejected/", "manifests/"):
        assert lake.keys(zone) == [], (zone, lake.keys(zone))
    # … but the killed upload is still open (what the re-run has to clean up)
    assert [k for k, _ in open_uploads(lake)] == killed, open_uploads(lake)

    # WHEN the file is run again (a new execution with the same input, as a redrive does)
    desc = machine.sfn.describe_execution(executionArn=first["executionArn"])
    machine.sfn.start_execution(stateMachineArn=machine.arn, name=f"{first['name'][:70]}-rerun", input=desc["input"])
    done = wait_for_executions(machine, 2, timeout=180)

    # THEN it succeeds in a new execution environment …
    rerun = next(e for e in done if e["name"].endswith("-rerun"))
    assert rerun["status"] == "SUCCEEDED", (rerun, transform.logs()[-3000:])
    assert transform.starts == 2
    # … writing the part the killed run was writing, whole: every row, read back by pyarrow
    manifest = only_manifest(lake)
    processed = [o["key"] for o in manifest["outputs"]["processed"]]
    assert killed[0] in processed, (killed, processed)
    assert lake.keys("processed/") == sorted(processed)
    table = pq.read_table(io.BytesIO(lake.get(killed[0])))
    assert table.num_rows == rows == manifest["rows_ok"] == manifest["rows_in"]
    ids = table.column("id_transaccion").to_pylist()
    assert len(set(ids)) == rows and ids[0] == "T-00000000" and ids[-1] == f"T-{rows - 1:08d}"
    for out in manifest["outputs"]["processed"]:
        head = lake.s3.head_object(Bucket=lake.bucket, Key=out["key"], ChecksumMode="ENABLED")
        assert head["ChecksumCRC64NVME"] == out["checksum"]["value"], (out, head)
    # … and leaving no multipart upload open: the re-run aborted the one the kill left
    assert open_uploads(lake) == []
    aborted = logged(transform, "aborted a multipart upload an interrupted write left open")
    assert [a["key"] for a in aborted] == killed, aborted


# --- a GetObject that fails mid-stream --------------------------------------------------------


def test_a_raw_object_read_cut_mid_stream_is_resumed_where_it_stopped(stack: MotoStack, launch: Any) -> None:
    run = launch(warehouse=False)
    lake: Lake = run["lake"]
    machine: Deployed = run["machine"]
    rows = 40_000
    body = transacciones(rows, seed=7)
    key = "raw/transacciones/year=2026/month=11/day=28/ventas del día.csv"
    cut_at = len(body) // 2
    reads: list[str | None] = []

    # GIVEN the first read of the raw object drops its connection halfway through the body
    def cut_first_read(request: Request) -> CutBody | None:
        if s3_operation(request) != "GetObject" or request.bucket_and_key != (lake.bucket, key):
            return None
        reads.append(request.headers.get("Range"))
        return CutBody(cut_at) if len(reads) == 1 else None

    stack.router.on_request(cut_first_read)

    # WHEN the file lands
    run["runtimes"]["s3-landing"](put_raw(lake, key, body))
    [done] = wait_for_executions(machine, 1, timeout=120)

    # THEN the transform asked for the rest from where the stream stopped, and succeeded
    assert reads[:2] == [None, f"bytes={cut_at}-"], reads
    assert done["status"] == "SUCCEEDED", (done, run["runtimes"]["transform"].logs()[-3000:])
    resumed = logged(run["runtimes"]["transform"], "object read interrupted; resuming")
    assert [r["at"] for r in resumed] == [cut_at], resumed
    # … with every row, and the whole object's checksum checked across the two reads
    manifest = only_manifest(lake)
    assert (manifest["rows_in"], manifest["rows_ok"], manifest["source"]["size"]) == (rows, rows, len(body))
    table = pq.read_table(io.BytesIO(lake.get(manifest["outputs"]["processed"][0]["key"])))
    assert table.num_rows == rows
    # (the producer's CRC32, which the transform recomputed over both reads: a gap or an overlap
    # at the cut would have failed the task with ChecksumMismatch)
    crc32 = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    stored = manifest["source"]["stored_checksum"]
    assert (stored["algorithm"], stored["value"]) == ("CRC32", crc32), stored


# --- StartExecution throttled -----------------------------------------------------------------


def test_a_throttled_start_is_retried_and_past_the_sdk_attempts_the_redelivery_starts_it(stack: MotoStack, launch: Any) -> None:
    run = launch(warehouse=False)
    lake: Lake = run["lake"]
    machine: Deployed = run["machine"]
    landing: RuntimeApi = run["runtimes"]["s3-landing"]
    body = transacciones(10, seed=3)
    key = "raw/transacciones/year=2026/month=11/day=28/throttled.csv"
    event = put_raw(lake, key, body)
    starts: list[str] = []
    throttled = 5  # the SDK makes 4 attempts a call (lago::aws::MAX_ATTEMPTS)

    # GIVEN Step Functions answers the first five StartExecution calls ThrottlingException
    def throttle(request: Request) -> Answer | None:
        if request.target != "AWSStepFunctions.StartExecution":
            return None
        starts.append(json.loads(request.body)["name"])
        if len(starts) <= throttled:
            return json_error("ThrottlingException", "Rate exceeded")
        return None

    stack.router.on_request(throttle)

    # WHEN the event is delivered: every attempt of the SDK is throttled
    try:
        landing(event)
        raise AssertionError("the landing function succeeded without starting the execution")
    except FunctionError as e:
        # THEN the invocation fails Retryable, so the event is delivered again
        assert e.error_type == "Retryable", e
    assert len(starts) == 4 and executions(machine) == []
    # WHEN it is delivered again: one more throttle, then the SDK's retry goes through
    again = landing(event)
    # THEN one execution started, under the same name every attempt used, and it succeeds
    assert again["started"] == 1, again
    assert len(starts) == throttled + 1 and len(set(starts)) == 1, starts
    [done] = wait_for_executions(machine, 1, timeout=120)
    assert done["name"] == starts[0] and done["status"] == "SUCCEEDED", done


# --- 200 files in a burst, every event delivered twice ----------------------------------------


def test_a_burst_of_200_files_each_announced_twice_runs_200_executions_and_writes_each_output_once(stack: MotoStack, launch: Any) -> None:
    # GIVEN four landing and two transform execution environments (Lambda scales out)
    run = launch(warehouse=False, concurrency={"s3-landing": 4, "transform": 2})
    lake: Lake = run["lake"]
    machine: Deployed = run["machine"]
    writes: Counter[str] = Counter()
    lock = threading.Lock()

    def count_writes(request: Request) -> None:
        op = s3_operation(request)
        if op in ("PutObject", "CompleteMultipartUpload") and request.bucket_and_key[0] == lake.bucket:
            with lock:
                writes[request.bucket_and_key[1]] += 1

    stack.router.on_request(count_writes)
    files = 200
    events = []
    for i in range(files):
        key = f"raw/transacciones/year=2026/month=11/day={1 + i % 28:02d}/burst-{i:03d}.csv"
        body = transacciones(3, seed=i, prefix=f"B{i}") + f"B{i}-X;2026-11-01;trueque;Nadie;1;1;solar\n".encode()
        events.append(put_raw(lake, key, body))
    deliveries = events + events
    random.Random(18).shuffle(deliveries)

    # WHEN the 400 events arrive at once, in no order
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run["runtimes"]["s3-landing"], deliveries))
    done = wait_for_executions(machine, files, timeout=300)
    elapsed = time.monotonic() - started

    # THEN every delivery was taken (started, or found already started) …
    assert sum(r["started"] + r.get("already_started", 0) for r in results) == 2 * files, results
    # … exactly one execution ran per file, and every one succeeded
    assert len(done) == files, len(done)
    assert Counter(e["status"] for e in done) == {"SUCCEEDED": files}
    inputs = {json.loads(machine.sfn.describe_execution(executionArn=e["executionArn"])["input"])["key"] for e in done}
    assert len(inputs) == files
    # … the transform ran once per file (and its verify once), and each file has one manifest
    tasks = [c for c in stack.router.calls(FN["transform"]) if "action" not in c.payload]
    assert len(tasks) == files, len(tasks)
    assert sorted(Counter(c.payload["key"] for c in tasks).values()) == [1] * files
    manifests = lake.keys("manifests/")
    assert len(manifests) == files
    # … and every object of processed/, rejected/ and manifests/ was written exactly once
    outputs = [k for zone in ("processed/", "rejected/", "manifests/") for k in lake.keys(zone)]
    assert len(outputs) == 3 * files, len(outputs)
    assert {k: writes[k] for k in outputs} == {k: 1 for k in outputs}
    print(f"\nburst: {files} files × 2 deliveries → {len(done)} executions, {len(manifests)} manifests, " f"{len(outputs)} outputs written once each, in {elapsed:.1f} s")


# --- pathological files -----------------------------------------------------------------------


class Generated(io.RawIOBase):
    """A file-like object yielding `prefix` then `size` bytes of `fill`, made as it is read: the
    200 MB object is uploaded without ever being held in memory."""

    def __init__(self, prefix: bytes, fill: bytes, size: int):
        self._prefix, self._fill, self._left = prefix, fill * (1 << 16), size
        self.size = len(prefix) + size

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self._prefix:
            n = min(len(buf), len(self._prefix))
            buf[:n], self._prefix = self._prefix[:n], self._prefix[n:]
            return n
        n = min(len(buf), self._left, len(self._fill))
        buf[:n] = self._fill[:n]
        self._left -= n
        return n


def test_pathological_files_are_rejected_whole_with_a_reason_in_bounded_memory(stack: MotoStack, launch: Any) -> None:
    run = launch(warehouse=False)
    lake: Lake = run["lake"]
    machine: Deployed = run["machine"]
    transform: RuntimeApi = run["runtimes"]["transform"]
    day = "raw/transacciones/year=2026/month=11/day=28/"
    line = 200_000_000
    # GIVEN a good header followed by one 200 MB line, 16 MiB of NUL bytes (a file allocated and
    # never written), a header with no rows, and an empty file
    files = [
        ("una-linea.csv", Generated(HEADER.encode() + b"T-1;2026-11-28;compra;", b"A", line), "unreadable", "no record boundary within 64 MiB"),
        ("ceros.csv", Generated(b"", b"\0", 16 * MIB), "missing_columns", "required columns missing: tipo_transaccion"),
        ("solo-encabezado.csv", Generated(HEADER.encode(), b"", 0), "empty_file", "a header but no records"),
        ("vacio.csv", Generated(b"", b"", 0), "empty_file", "no header and no records"),
    ]
    peaks: dict[str, int] = {}
    for i, (name, body, reason, detail) in enumerate(files):
        key = day + name
        size = body.size
        lake.s3.upload_fileobj(body, lake.bucket, key, Config=TransferConfig(multipart_chunksize=16 * MIB, max_concurrency=1))
        etag = lake.s3.head_object(Bucket=lake.bucket, Key=key)["ETag"].strip('"')
        transform.reset_peak_rss()
        # WHEN it lands
        run["runtimes"]["s3-landing"](object_created(lake.bucket, key, size, etag))
        found = wait_for_executions(machine, i + 1, timeout=300)
        peaks[name] = transform.peak_rss()
        execution = next(e for e in found if json.loads(machine.sfn.describe_execution(executionArn=e["executionArn"])["input"])["key"] == key)
        # THEN the execution fails as a rejected file does, …
        assert execution["status"] == "FAILED", (name, execution, transform.logs()[-3000:])
        # … its manifest says why, …
        [manifest_key] = [k for k in lake.keys("manifests/") if f"/{name.rsplit('.', 1)[0]}-" in k]
        raw_manifest = lake.get(manifest_key)
        assert len(raw_manifest) < 16 * 1024, (name, len(raw_manifest))
        manifest = json.loads(raw_manifest)
        assert (manifest["status"], manifest["file_reason"]) == ("rejected", reason), (name, manifest)
        assert detail in manifest["file_detail"], (name, manifest["file_detail"])
        assert len(manifest["file_detail"]) < 1024, (name, len(manifest["file_detail"]))
        assert manifest["rows_in"] == manifest["rows_rejected"] and manifest["rows_ok"] == 0, manifest
        assert manifest["outputs"]["processed"] == []
        # … its bytes are kept whole in rejected/, …
        kept = manifest["outputs"]["rejected"]
        assert lake.s3.head_object(Bucket=lake.bucket, Key=kept["key"])["ContentLength"] == size == kept["bytes"], (name, kept)
        # … and the transform's memory stayed bounded
        assert peaks[name] < PATHOLOGICAL_RSS_BOUND < TRANSFORM_MEMORY_SIZE, (name, peaks[name] / MIB)
    notes = machine.notifications()
    assert sorted(n["error"] for n in notes) == ["FileRejected"] * len(files), notes
    assert lake.keys("processed/") == [] and open_uploads(lake) == []
    print("\npeak RSS of the transform: " + ", ".join(f"{name} {peak / MIB:.1f} MiB" for name, peak in peaks.items()))
