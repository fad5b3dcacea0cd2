"""The real Rust functions behind Lambda Runtime APIs, against moto: what the end-to-end and
the fault tests share.

`launch(...)` starts the three function binaries (`LAGO_FUNCTIONS_DIR`) and registers them with
the router, beside a `Lake` (bucket, salt secret, Glue database and tables, Data API stubs) and the real
ingest ASL deployed in moto; `object_created` is the EventBridge event s3-landing gets, and
`wait_for_executions` polls the state machine until its executions are done.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import ACCOUNT, MotoStack
from executions import Deployed
from router import Pool, RuntimeApi
from support import EVENTS
from test_state_machine import FN, deployed

FUNCTIONS = ("s3-landing", "transform", "redshift-load")
DATASETS = ("clientes", "proveedores", "transacciones", "trm")


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
    """The AWS side of one run: bucket, salt secret, the processed Glue database with the four
    tables partitioned by year/month/day (as the template declares them), Data API stubs."""

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
        self.database = f"energy_processed_{suffix}"
        self.glue.create_database(DatabaseInput={"Name": self.database})
        for dataset in DATASETS:
            self.glue.create_table(
                DatabaseName=self.database,
                TableInput={
                    "Name": dataset,
                    "TableType": "EXTERNAL_TABLE",
                    "StorageDescriptor": {"Location": f"s3://{self.bucket}/processed/{dataset}/"},
                    "PartitionKeys": [{"Name": k, "Type": "string"} for k in ("year", "month", "day")],
                },
            )
        self.batches: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        router = stack.router
        router.register_operation("RedshiftData.BatchExecuteStatement", self._batch_execute)
        router.register_operation("RedshiftData.DescribeStatement", self._describe)

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

    def partitions(self, table: str) -> list[tuple[list[str], str]]:
        """The (values, location) of the table's partitions in the Glue catalog."""
        out = self.glue.get_partitions(DatabaseName=self.database, TableName=table)
        return sorted((p["Values"], p["StorageDescriptor"]["Location"]) for p in out["Partitions"])

    def keys(self, prefix: str) -> list[str]:
        out = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in out.get("Contents", []))

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()


Launch = Callable[..., dict[str, Any]]


def start_functions(
    stack: MotoStack,
    functions_dir: Path,
    *,
    warehouse: bool = True,
    concurrency: dict[str, int] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A lake, the ingest ASL deployed in moto and the three function binaries behind Runtime
    APIs, registered with the router: `{"lake", "machine", "runtimes"}`. The caller stops the
    runtimes. (scripts/cost.py measures a run of the pipeline with it.)"""
    lake = Lake(stack)
    machine = deployed(stack, warehouse=warehouse)
    config = {
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
        "GLUE_DATABASE": lake.database,
        "REDSHIFT_WORKGROUP": "lago-e2e",
        "REDSHIFT_DATABASE": "dev",
        "REDSHIFT_SCHEMA": "energy",
        "REDSHIFT_COPY_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/lago-e2e-copy",
        **(env or {}),
    }
    runtimes: dict[str, RuntimeApi | Pool] = {}
    for name in FUNCTIONS:
        argv, n = [str(functions_dir / name)], (concurrency or {}).get(name, 1)
        one = [RuntimeApi(FN.get(name, name), argv, config) for _ in range(n)]
        runtimes[name] = one[0] if n == 1 else Pool(one)
    for name in ("transform", "redshift-load"):
        stack.router.register(FN[name], runtimes[name])
    return {"lake": lake, "machine": machine, "runtimes": runtimes}


@pytest.fixture
def launch(stack: MotoStack, functions_dir: Path) -> Iterator[Launch]:
    """Starts everything one run needs, as `launch(warehouse=…, concurrency=…, env=…)`:
    `{"lake", "machine", "runtimes"}`; each function runs `concurrency.get(name, 1)` execution
    environments (a `Pool` when more than one) and gets `env` on top of its configuration. Every
    function process is stopped afterwards."""
    started: list[RuntimeApi | Pool] = []

    def start(**options: Any) -> dict[str, Any]:
        run = start_functions(stack, functions_dir, **options)
        started.extend(run["runtimes"].values())
        return run

    try:
        yield start
    finally:
        for runtime in started:
            runtime.stop()


@pytest.fixture
def functions(launch: Launch) -> dict[str, Any]:
    """The three functions, one execution environment each, with the warehouse configured."""
    return launch()


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


def executions(machine: Deployed) -> list[dict[str, Any]]:
    """Every execution of the state machine (all pages)."""
    pages = machine.sfn.get_paginator("list_executions").paginate(stateMachineArn=machine.arn)
    return [e for page in pages for e in page["executions"]]


def wait_for_executions(machine: Deployed, count: int = 1, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Polls until at least `count` executions exist and none is RUNNING; returns them all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = executions(machine)
        if len(found) >= count and all(e["status"] != "RUNNING" for e in found):
            return found
        time.sleep(0.1 if count == 1 else 0.5)
    raise AssertionError(f"{count} ingest execution(s) did not finish in {timeout}s")


def wait_for_execution(machine: Deployed, timeout: float = 120.0) -> dict[str, Any]:
    found = wait_for_executions(machine, 1, timeout)
    return {"executions": found, "desc": machine.sfn.describe_execution(executionArn=found[0]["executionArn"])}
