"""End to end: the real Rust functions, the real ASL, moto.

A CSV is put in `raw/` of a bucket in moto; `s3-landing` (its real binary, behind a Lambda
Runtime API) gets the EventBridge "Object Created" event and starts the ingest state machine in
moto's interpreter, which invokes the real `transform` (transform, verify, register) and
`redshift-load` binaries through the router. The test then reads what each of them left behind:
Parquet in `processed/` (read back with pyarrow), the manifest, the partition in moto's Glue
catalog, the COPY batch and the SNS notification.

moto's Redshift Data API has no BatchExecuteStatement, so the router answers the two Data API
calls; everything else is moto's.

Needs the function binaries: `LAGO_FUNCTIONS_DIR` (the test command builds them and sets it).
"""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow.parquet as pq

from conftest import MotoStack
from executions import Deployed
from real_functions import Lake, functions, functions_dir, launch, object_created, wait_for_execution  # noqa: F401 (fixtures)
from router import RuntimeApi

KEY = "raw/transacciones/year=2026/month=11/day=28/ventas energía.csv"
CSV = (
    "id_transaccion;fecha_transaccion;tipo_transaccion;nombre_cliente_proveedor;cantidad_comprada;precio;tipo_energia\r\n"
    "T-1;2026-11-27;compra;Energía Andina S.A.;1200,5;250,1234;eolica\r\n"
    "T-2;2026-11-27;venta;Cliente Uno;300;310;hidroelectrica\r\n"
    "T-3;2026-11-27;trueque;Cliente Dos;10;1;eolica\r\n"
    "T-1;2026-11-28;compra;Otro;1;1;nuclear\r\n"
).encode("utf-8")


def test_a_csv_in_raw_becomes_parquet_a_partition_a_copy_and_a_notification(stack: MotoStack, functions: dict[str, Any]) -> None:
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

    # … its partition is in the Glue catalog, where the Parquet is, with no crawler run
    assert lake.partitions("transacciones") == [
        (["2026", "11", "28"], f"s3://{lake.bucket}/processed/transacciones/year=2026/month=11/day=28/")
    ]
    assert all(lake.partitions(t) == [] for t in ("clientes", "proveedores", "trm"))

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
