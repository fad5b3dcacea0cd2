"""End to end: the real Rust functions, the real ASL, moto.

A CSV is put in `raw/` of a bucket in moto; `s3-landing` (its real binary, behind a Lambda
Runtime API) gets the EventBridge "Object Created" event and starts the ingest state machine in
moto's interpreter, which invokes the real `transform`, `start-crawler` and `redshift-load`
binaries through the router. The test then reads what each of them left behind: Parquet in
`processed/` (read back with pyarrow), the manifest, the crawler run, the COPY batch and the SNS
notification.

moto's Glue crawlers stay RUNNING forever and its Redshift Data API has no
BatchExecuteStatement, so the router answers `GetCrawler` (after checking the crawler really is
running in moto) and the two Data API calls; everything else is moto's.

Needs the function binaries: `LAGO_FUNCTIONS_DIR` (the test command builds them and sets it).
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pyarrow.parquet as pq
import pytest

from conftest import ACCOUNT, MotoStack
from router import RuntimeApi, ServiceError
from support import EVENTS
from executions import Deployed
from test_state_machine import FN, deployed

FUNCTIONS = ("s3-landing", "transform", "start-crawler", "redshift-load")
KEY = "raw/transacciones/year=2026/month=11/day=28/ventas energía.csv"
CSV = (
    "id_transaccion;fecha_transaccion;tipo_transaccion;nombre_cliente_proveedor;cantidad_comprada;precio;tipo_energia\r\n"
    "T-1;2026-11-27;compra;Energía Andina S.A.;1200,5;250,1234;eolica\r\n"
    "T-2;2026-11-27;venta;Cliente Uno;300;310;hidroelectrica\r\n"
    "T-3;2026-11-27;trueque;Cliente Dos;10;1;eolica\r\n"
    "T-1;2026-11-28;compra;Otro;1;1;nuclear\r\n"
).encode("utf-8")


@pytest.fixture(scope="module")
def functions_dir() -> Path:
    where = os.environ.get("LAGO_FUNCTIONS_DIR")
    if not where:
        pytest.skip("set LAGO_FUNCTIONS_DIR to the directory of the built function binaries (make test does)")
    path = Path(where)
    missing = [f for f in FUNCTIONS if not (path / f).is_file()]
    assert not missing, f"function binaries missing in {path}: {missing} (cargo build --workspace --bins)"
    return path


class Lake:
    """The AWS side of one run: bucket, salt secret, Glue database and crawler, Data API stubs."""

    def __init__(self, stack: MotoStack):
        suffix = uuid.uuid4().hex[:8]
        self.stack = stack
        self.s3 = stack.client("s3")
        self.glue = stack.client("glue")
        self.bucket = f"lago-e2e-{suffix}"
        self.s3.create_bucket(Bucket=self.bucket)
        self.salt_arn = stack.client("secretsmanager").create_secret(
            Name=f"lago-e2e-salt-{suffix}", SecretString=f"salt-{uuid.uuid4().hex}"
        )["ARN"]
        self.crawler_prefix = f"lago-e2e-{suffix}"
        self.crawler = f"{self.crawler_prefix}-processed-transacciones"
        self.glue.create_database(DatabaseInput={"Name": f"energy_processed_{suffix}"})
        self.glue.create_crawler(
            Name=self.crawler,
            Role=f"arn:aws:iam::{ACCOUNT}:role/lago-e2e-crawler",
            DatabaseName=f"energy_processed_{suffix}",
            Targets={"S3Targets": [{"Path": f"s3://{self.bucket}/processed/transacciones/"}]},
        )
        self.crawler_states_seen: list[str] = []
        self.batches: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        router = stack.router
        router.register_operation("AWSGlue.GetCrawler", self._get_crawler)
        router.register_operation("RedshiftData.BatchExecuteStatement", self._batch_execute)
        router.register_operation("RedshiftData.DescribeStatement", self._describe)

    def _get_crawler(self, request: dict[str, Any]) -> dict[str, Any]:
        # What moto says first (RUNNING once start-crawler started it), then the crawl finished.
        # Other crawlers (the function's warm-up asks for one at start) get moto's own answer.
        try:
            crawler = self.glue.get_crawler(Name=request["Name"])["Crawler"]
        except self.glue.exceptions.EntityNotFoundException as e:
            raise ServiceError("EntityNotFoundException", str(e)) from e
        if request["Name"] != self.crawler:
            return {"Crawler": crawler}
        with self._lock:
            self.crawler_states_seen.append(crawler["State"])
        now = datetime.now(timezone.utc).timestamp()
        return {
            "Crawler": {
                "Name": crawler["Name"],
                "State": "READY",
                "LastCrawl": {"Status": "SUCCEEDED", "StartTime": now, "LogGroup": "/aws-glue/crawlers"},
            }
        }

    def _batch_execute(self, request: dict[str, Any]) -> dict[str, Any]:
        statement_id = str(uuid.uuid4())
        with self._lock:
            self.batches.append({**request, "Id": statement_id})
        return {"Id": statement_id, "CreatedAt": time.time(), "Database": request.get("Database")}

    def _describe(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            batch = next((b for b in self.batches if b["Id"] == request["Id"]), None)
        assert batch is not None, f"DescribeStatement of an unknown statement {request['Id']}"
        return {"Id": batch["Id"], "Status": "FINISHED", "HasResultSet": False, "QueryString": ""}

    def keys(self, prefix: str) -> list[str]:
        out = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in out.get("Contents", []))

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()


@pytest.fixture
def functions(stack: MotoStack, functions_dir: Path) -> Iterator[dict[str, Any]]:
    """Everything one run needs; the function processes are stopped afterwards."""
    lake = Lake(stack)
    machine = deployed(stack)
    env = {
        # Every AWS call goes to the router: it answers the stubbed operations, moto the rest.
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{stack.router.port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_LAMBDA_LOG_LEVEL": "INFO",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",  # as the template's LoggingConfig sets it
        "LAKE_BUCKET": lake.bucket,
        "STATE_MACHINE_ARN": machine.arn,
        "PII_SALT_SECRET_ARN": lake.salt_arn,
        "CRAWLER_PREFIX": lake.crawler_prefix,
        "REDSHIFT_WORKGROUP": "lago-e2e",
        "REDSHIFT_DATABASE": "dev",
        "REDSHIFT_SCHEMA": "energy",
        "REDSHIFT_COPY_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/lago-e2e-copy",
    }
    runtimes = {name: RuntimeApi(FN.get(name, name), [str(functions_dir / name)], env) for name in FUNCTIONS}
    for name in ("transform", "start-crawler", "redshift-load"):
        stack.router.register(FN[name], runtimes[name])
    try:
        yield {"lake": lake, "machine": machine, "runtimes": runtimes}
    finally:
        for rt in runtimes.values():
            rt.stop()


def object_created(bucket: str, key: str, size: int, etag: str) -> dict[str, Any]:
    """The EventBridge event of the sample in events/, for this object (key URL-encoded as S3 does)."""
    from urllib.parse import quote_plus

    event = json.loads((EVENTS / "s3-landing" / "eventbridge-object-created.json").read_text(encoding="utf-8"))
    event["time"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    event["resources"] = [f"arn:aws:s3:::{bucket}"]
    event["detail"]["bucket"]["name"] = bucket
    event["detail"]["object"].update({"key": quote_plus(key, safe="/="), "size": size, "etag": etag})
    event["detail"]["object"].pop("version-id", None)
    return event


def wait_for_execution(machine: Deployed, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        executions = machine.sfn.list_executions(stateMachineArn=machine.arn)["executions"]
        done = [e for e in executions if e["status"] != "RUNNING"]
        if executions and len(done) == len(executions):
            return {"executions": executions, "desc": machine.sfn.describe_execution(executionArn=executions[0]["executionArn"])}
        time.sleep(0.1)
    raise AssertionError(f"the ingest execution did not finish in {timeout}s")


def test_a_csv_in_raw_becomes_parquet_a_crawl_a_copy_and_a_notification(stack: MotoStack, functions: dict[str, Any]) -> None:
    lake: Lake = functions["lake"]
    machine: Deployed = functions["machine"]
    landing: RuntimeApi = functions["runtimes"]["s3-landing"]

    # GIVEN a Spanish-Excel style CSV (';' and decimal comma) put in raw/ with an accented name
    put = lake.s3.put_object(Bucket=lake.bucket, Key=KEY, Body=CSV)
    event = object_created(lake.bucket, KEY, len(CSV), put["ETag"].strip('"'))

    # WHEN S3 announces it twice (EventBridge delivers at least once)
    first = landing(event)
    second = landing(event)

    # THEN exactly one execution starts, and it succeeds
    assert first["started"] == 1, first
    assert second["started"] + second.get("already_started", 0) >= 1, second
    run = wait_for_execution(machine)
    assert len(run["executions"]) == 1, run["executions"]
    desc = run["desc"]
    assert desc["status"] == "SUCCEEDED", (desc, {n: r.logs()[-3000:] for n, r in functions["runtimes"].items()})
    execution_input = json.loads(desc["input"])
    assert execution_input["key"] == KEY
    assert execution_input["dataset"] == "transacciones"
    assert execution_input["load_date"] == "2026-11-28"

    # … the transform wrote typed Parquet in processed/, the bad rows in rejected/, a manifest
    parts = lake.keys("processed/transacciones/year=2026/month=11/day=28/")
    assert parts and all(k.endswith(".parquet") for k in parts), parts
    table = pq.read_table(io.BytesIO(lake.get(parts[0])))
    assert table.num_rows == 2
    rows = {r["id_transaccion"]: r for r in table.to_pylist()}
    assert set(rows) == {"T-1", "T-2"}
    assert str(rows["T-1"]["total"]) == "300273.14"  # 1200.5 × 250.1234 = 300273.1417 → 2 places
    assert rows["T-1"]["_source_key"] == KEY
    rejected = lake.keys("rejected/transacciones/year=2026/month=11/day=28/")
    reasons = [json.loads(line)["reason"] for line in lake.get(rejected[0]).decode().splitlines()]
    assert sorted(reasons) == ["duplicate_key", "invalid_enum:tipo_transaccion"], reasons
    [manifest_key] = lake.keys("manifests/transacciones/year=2026/month=11/day=28/")
    manifest = json.loads(lake.get(manifest_key))
    assert (manifest["rows_in"], manifest["rows_ok"], manifest["rows_rejected"]) == (4, 2, 2), manifest

    # … the crawler was really started in moto before its status was asked
    assert lake.crawler_states_seen and lake.crawler_states_seen[0] == "RUNNING", lake.crawler_states_seen

    # … one COPY batch was submitted, loading exactly the Parquet parts the transform wrote
    assert len(lake.batches) == 1, lake.batches
    sqls = lake.batches[0]["Sqls"]
    copies = [s for s in sqls if s.lstrip().upper().startswith("COPY")]
    assert copies, sqls
    assert any(f"s3://{lake.bucket}/" in s and "FORMAT AS PARQUET" in s.upper() for s in copies), copies
    assert lake.batches[0]["WorkgroupName"] == "lago-e2e"

    # … and SNS got one success notification with the counts
    notes = machine.notifications()
    assert len(notes) == 1, notes
    note = notes[0]
    assert note["event"] == "IngestSucceeded"
    assert (note["key"], note["rows_in"], note["rows_ok"], note["rows_rejected"]) == (KEY, 4, 2, 2), note

    # … and the functions log Lambda JSON lines: the transform's summary carries the runtime's
    # request id and the handler's fields at the top level, and no line nests fields under a span
    for name, runtime in functions["runtimes"].items():
        logged = [json.loads(line) for line in runtime.logs().splitlines() if line.startswith("{")]
        logged = [line for line in logged if "level" in line]  # not the EMF metric records
        assert not any("span" in line or "spans" in line for line in logged), (name, logged)
    logged = [json.loads(line) for line in functions["runtimes"]["transform"].logs().splitlines() if line.startswith("{")]
    summary = [line for line in logged if line.get("message") == "transformed"]
    assert len(summary) == 1, logged
    assert summary[0]["requestId"], summary
    assert (summary[0]["dataset"], summary[0]["key"], summary[0]["rows_ok"]) == ("transacciones", KEY, 2), summary

    # … the verify step read every output back through the real function, and all matched
    verified = [line for line in logged if line.get("message") == "outputs verified"]
    assert len(verified) == 1 and verified[0]["verified"] == 2, logged
    # … each with the checksum S3 stored for it, as its manifest lists it
    for out in manifest["outputs"]["processed"] + [manifest["outputs"]["rejected"]]:
        head = lake.s3.head_object(Bucket=lake.bucket, Key=out["key"], ChecksumMode="ENABLED")
        assert head["ChecksumCRC64NVME"] == out["checksum"]["value"], (out, head)
