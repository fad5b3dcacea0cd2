"""The real ingest ASL, executed by moto's Step Functions interpreter.

Each test deploys `statemachines/ingest.asl.json` (substituted as the template substitutes it,
with 0-second waits and small poll limits) into the moto server of the `stack` fixture, scripts
what each Lambda answers through the router, runs one execution and checks the path it took from
the execution history — per branch, in order — plus what the Lambdas were sent and what SNS got.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import MotoStack
from executions import Deployed, lambda_arn
from router import FunctionError, by_action, scripted
from support import EVENTS, STATEMACHINES

ASL = STATEMACHINES / "ingest.asl.json"
FN = {
    "transform": "lago-test-transform",
    "redshift-load": "lago-test-redshift-load",
}
MAX_POLLS = 3

# What s3-landing starts an execution with (events/ holds the same shape).
EXECUTION_INPUT = {
    "bucket": "lago-lake-test",
    "key": "raw/transacciones/year=2025/month=05/day=10/ventas-día.csv",
    "version_id": "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY",
    "etag": "d41d8cd98f00b204e9800998ecf8427e",
    "size": 48213,
    "dataset": "transacciones",
    "load_date": "2025-05-10",
}
TRANSFORM_OK = {
    "status": "ok",
    "dataset": "transacciones",
    "load_date": "2025-05-10",
    "rows_in": 100,
    "rows_ok": 98,
    "rows_rejected": 2,
    "bucket": "lago-lake-test",
    "key": "raw/transacciones/year=2025/month=05/day=10/ventas-día.csv",
    "outputs": ["s3://lago-lake-test/processed/transacciones/year=2025/month=05/day=10/ventas-dia-1c0b7a4e-00000.parquet"],
    "rejected": "s3://lago-lake-test/rejected/transacciones/year=2025/month=05/day=10/ventas-dia-1c0b7a4e.ndjson",
    "manifest": "s3://lago-lake-test/manifests/transacciones/year=2025/month=05/day=10/ventas-dia-1c0b7a4e.json",
    "file_reason": None,
    "duration_ms": 212,
}
# Shapes of functions/transform (RegisterOutput) and shared/src/ingest/statements.rs (SubmitOutput).
REGISTERED = {
    "database": "energy_processed_db_test",
    "table": "transacciones",
    "partitions": [["2025", "05", "10"]],
    "created": 1,
    "existed": 0,
    "skipped": False,
}
STATEMENT_ID = "7b0c6f3e-4f7c-4b39-9d49-2f6f0d0c1a11"
SUBMITTED = {
    "statement_id": STATEMENT_ID,
    "statement_name": "lago-load-transacciones-0123456789abcdef",
    "state": "SUBMITTED",
    "statements": 5,
    "dataset": "transacciones",
    "source_key": "raw/transacciones/year=2025/month=05/day=10/ventas-día.csv",
}
NOTHING_TO_LOAD = {**SUBMITTED, "statement_id": None, "state": "FINISHED", "statements": 0, "skipped": True}
STARTED_STMT = {"statement_id": STATEMENT_ID, "state": "STARTED", "error": None}
# lago::integrity::VerifyReport of a manifest whose two outputs match.
VERIFIED = {"manifests": 1, "objects": 2, "verified": 2, "bytes": 48213, "without_checksum": [], "problems": []}
MISMATCH = FunctionError(
    "ChecksumMismatch",
    f"1 of the outputs of {TRANSFORM_OK['manifest']} do not match it: processed/…-00000.parquet mismatch",
)
FINISHED = {"statement_id": STATEMENT_ID, "state": "FINISHED", "error": None}

CATALOG_STATES = {"RegisterPartitions", "CatalogUpdated"}
LOAD_STATES = {
    "WarehouseConfigured",
    "LoadSkipped",
    "RedshiftLoad",
    "LoadSubmitted",
    "WaitForLoad",
    "RedshiftLoadStatus",
    "CountLoadPoll",
    "LoadState",
    "LoadFinished",
    "LoadFailed",
    "LoadTimedOut",
}


# --- harness ---------------------------------------------------------------------------------


def deployed(stack: MotoStack, *, warehouse: bool = True) -> Deployed:
    return Deployed(
        stack,
        ASL,
        {
            "TransformFunctionArn": lambda_arn(FN["transform"]),
            "RedshiftLoadFunctionArn": lambda_arn(FN["redshift-load"]),
            "WarehouseEnabled": "true" if warehouse else "false",
            "LoadPollSeconds": "0",
            "LoadMaxPolls": str(MAX_POLLS),
        },
        branch_states=CATALOG_STATES | LOAD_STATES,
    )


def script(
    stack: MotoStack,
    *,
    transform: list[Any] | None = None,
    verify: list[Any] | None = None,
    register: list[Any] | None = None,
    submit: list[Any] | None = None,
    load_status: list[Any] | None = None,
) -> None:
    r = stack.router
    r.register(
        FN["transform"],
        by_action(
            {
                None: scripted(transform or [TRANSFORM_OK]),
                "verify": scripted(verify or [VERIFIED]),
                "register": scripted(register or [REGISTERED]),
            }
        ),
    )
    r.register(
        FN["redshift-load"],
        by_action({"submit": scripted(submit or [SUBMITTED]), "status": scripted(load_status or [STARTED_STMT, FINISHED])}),
    )


def payloads(stack: MotoStack, fn: str, action: str | None = None) -> list[Any]:
    return [c.payload for c in stack.router.calls(FN[fn]) if action is None or c.payload.get("action") == action]


# --- scenarios -------------------------------------------------------------------------------


def test_happy_path_transforms_catalogs_loads_and_notifies(stack: MotoStack) -> None:
    # GIVEN a file that transforms with rows ok, its partition registered and a COPY that
    # finishes on the second poll
    sm = deployed(stack)
    script(stack)

    # WHEN the execution runs
    run = sm.run(EXECUTION_INPUT)

    # THEN it succeeds through both branches and notifies once with the counts
    assert run.status == "SUCCEEDED", run.failure()
    assert run.main_path() == ["Transform", "VerifyOutputs", "TransformOutcome", "CatalogAndLoad", "NotifySuccess", "Ingested"]
    # No crawler on the way: one task registers the partition, and the branch is done.
    assert run.branch(CATALOG_STATES) == ["RegisterPartitions", "CatalogUpdated"]
    assert run.branch(LOAD_STATES) == [
        "WarehouseConfigured", "RedshiftLoad", "LoadSubmitted", "WaitForLoad",
        "RedshiftLoadStatus", "CountLoadPoll", "LoadState", "WaitForLoad",
        "RedshiftLoadStatus", "CountLoadPoll", "LoadState", "LoadFinished",
    ]  # fmt: skip

    # The Lambdas got the documented task inputs.
    assert payloads(stack, "transform") == [
        EXECUTION_INPUT,
        {"action": "verify", "manifest": TRANSFORM_OK["manifest"]},
        {"action": "register", "manifest": TRANSFORM_OK["manifest"]},
    ]
    assert payloads(stack, "redshift-load", "submit") == [
        {"action": "submit", "dataset": "transacciones", "manifest": TRANSFORM_OK["manifest"]}
    ]
    assert payloads(stack, "redshift-load", "status") == [{"action": "status", "statement_id": STATEMENT_ID}] * 2

    [note] = run.notifications
    assert note["event"] == "IngestSucceeded"
    assert (note["dataset"], note["key"], note["rows_in"], note["rows_ok"], note["rows_rejected"]) == (
        "transacciones", EXECUTION_INPUT["key"], 100, 98, 2,
    )  # fmt: skip
    assert note["execution"].startswith("arn:aws:states:")


def test_a_registration_that_fails_for_a_while_is_retried_then_goes_on(stack: MotoStack) -> None:
    # GIVEN a catalog that throttles the first registration
    sm = deployed(stack)
    script(stack, register=[FunctionError("Retryable", "Glue BatchCreatePartition: ThrottlingException"), {**REGISTERED, "created": 0, "existed": 1}])

    run = sm.run(EXECUTION_INPUT)

    # THEN the task is retried inside its state and the execution succeeds
    assert run.status == "SUCCEEDED", run.failure()
    assert run.branch(CATALOG_STATES) == ["RegisterPartitions", "CatalogUpdated"]
    assert len(payloads(stack, "transform", "register")) == 2
    assert run.task_failures() == ["Retryable"]


def test_a_catalog_that_refuses_fails_the_execution_with_its_error(stack: MotoStack) -> None:
    # GIVEN a catalog without the table (a stack deployed without it, say)
    sm = deployed(stack)
    script(stack, register=[FunctionError("NotFound", "Glue: EntityNotFoundException: table transacciones")])

    run = sm.run(EXECUTION_INPUT)

    # THEN it is not retried: the execution fails, notified with the cause
    assert run.status == "FAILED"
    assert len(payloads(stack, "transform", "register")) == 1
    assert run.main_path() == ["Transform", "VerifyOutputs", "TransformOutcome", "CatalogAndLoad", "NotifyFailure", "IngestFailed"]
    error, cause = run.failure()
    assert error == "NotFound"
    assert "EntityNotFoundException" in cause
    [note] = run.notifications
    assert (note["event"], note["error"]) == ("IngestFailed", "NotFound")


def test_copy_failed_notifies_failure_and_fails_with_the_statement_error(stack: MotoStack) -> None:
    # GIVEN a COPY that Redshift reports FAILED
    sm = deployed(stack)
    copy_error = "ERROR: Spectrum Scan Error: column precio has type DECIMAL(18,4) in Parquet"
    script(stack, load_status=[{**FINISHED, "state": "FAILED", "error": copy_error}])

    run = sm.run(EXECUTION_INPUT)

    # THEN the load branch fails with the statement's error → NotifyFailure → Fail
    assert run.status == "FAILED"
    assert run.branch(LOAD_STATES) == [
        "WarehouseConfigured", "RedshiftLoad", "LoadSubmitted", "WaitForLoad",
        "RedshiftLoadStatus", "CountLoadPoll", "LoadState", "LoadFailed",
    ]  # fmt: skip
    assert run.main_path() == ["Transform", "VerifyOutputs", "TransformOutcome", "CatalogAndLoad", "NotifyFailure", "IngestFailed"]
    error, cause = run.failure()
    assert error == "LoadFailed"
    assert copy_error in json.loads(cause)["error"]
    [note] = run.notifications
    assert note["event"] == "IngestFailed" and note["error"] == "LoadFailed"
    assert copy_error in note["cause"]


def test_rejected_file_notifies_failure_without_catalog_or_load(stack: MotoStack) -> None:
    # GIVEN a file rejected whole (e.g. missing required columns)
    sm = deployed(stack)
    rejected = {**TRANSFORM_OK, "status": "rejected", "rows_in": 0, "rows_ok": 0, "rows_rejected": 0, "outputs": []}
    script(stack, transform=[rejected])

    run = sm.run(EXECUTION_INPUT)

    assert run.status == "FAILED"
    assert run.path == ["Transform", "VerifyOutputs", "TransformOutcome", "FileRejected", "NotifyFailure", "IngestFailed"]
    assert payloads(stack, "transform", "register") == [] and payloads(stack, "redshift-load") == []
    error, cause = run.failure()
    assert error == "FileRejected"
    assert TRANSFORM_OK["manifest"] in cause
    [note] = run.notifications
    assert (note["event"], note["error"], note["key"]) == ("IngestFailed", "FileRejected", EXECUTION_INPUT["key"])


def test_zero_rows_ok_notifies_success_without_catalog_or_load(stack: MotoStack) -> None:
    sm = deployed(stack)
    script(stack, transform=[{**TRANSFORM_OK, "rows_ok": 0, "rows_rejected": 100, "outputs": []}])

    run = sm.run(EXECUTION_INPUT)

    assert run.status == "SUCCEEDED", run.failure()
    assert run.path == ["Transform", "VerifyOutputs", "TransformOutcome", "NotifySuccess", "Ingested"]
    assert payloads(stack, "transform", "register") == [] and payloads(stack, "redshift-load") == []
    [note] = run.notifications
    assert (note["event"], note["rows_ok"], note["rows_rejected"]) == ("IngestSucceeded", 0, 100)


def test_retryable_error_is_retried_then_succeeds(stack: MotoStack) -> None:
    # GIVEN a transform whose first attempt fails with a transient, Retryable error
    sm = deployed(stack)
    script(stack, transform=[FunctionError("Retryable", "S3 GetObject: SlowDown"), TRANSFORM_OK])

    run = sm.run(EXECUTION_INPUT)

    # THEN the Task is retried (not caught) and the execution goes on to succeed
    assert run.status == "SUCCEEDED", run.failure()
    assert payloads(stack, "transform", None)[:3] == [EXECUTION_INPUT, EXECUTION_INPUT, {"action": "verify", "manifest": TRANSFORM_OK["manifest"]}]
    assert run.task_failures() == ["Retryable"]
    assert run.path.count("Transform") == 1  # a retry stays inside the state
    assert "NotifyFailure" not in run.path
    assert run.main_path()[-2:] == ["NotifySuccess", "Ingested"]


def test_non_retryable_error_is_caught_at_once(stack: MotoStack) -> None:
    sm = deployed(stack)
    script(stack, transform=[FunctionError("InvalidInput", "key is not under raw/<dataset>/")])

    run = sm.run(EXECUTION_INPUT)

    assert run.status == "FAILED"
    assert len(payloads(stack, "transform")) == 1
    assert run.path == ["Transform", "NotifyFailure", "IngestFailed"]
    assert run.failure()[0] == "InvalidInput"


def test_outputs_that_do_not_match_their_manifest_fail_before_catalog_or_load(stack: MotoStack) -> None:
    # GIVEN outputs that, read back, never match the checksums their manifest lists
    sm = deployed(stack)
    script(stack, verify=[MISMATCH])

    run = sm.run(EXECUTION_INPUT)

    # THEN they are read once more, then the execution fails with ChecksumMismatch, nothing
    # cataloged or loaded, and the notification says which manifest
    assert run.status == "FAILED"
    assert run.path == ["Transform", "VerifyOutputs", "NotifyFailure", "IngestFailed"]
    assert payloads(stack, "transform", "verify") == [{"action": "verify", "manifest": TRANSFORM_OK["manifest"]}] * 2
    assert run.failure()[0] == "ChecksumMismatch"
    assert payloads(stack, "transform", "register") == [] and payloads(stack, "redshift-load") == []
    [note] = run.notifications
    assert note["event"] == "IngestFailed" and note["error"] == "ChecksumMismatch"
    assert TRANSFORM_OK["manifest"] in note["cause"]


def test_a_mismatch_that_does_not_repeat_is_read_again_and_goes_on(stack: MotoStack) -> None:
    # GIVEN a read-back garbled once (the next read matches)
    sm = deployed(stack)
    script(stack, verify=[MISMATCH, VERIFIED])

    run = sm.run(EXECUTION_INPUT)

    assert run.status == "SUCCEEDED", run.failure()
    assert run.task_failures() == ["ChecksumMismatch"]
    assert run.path.count("VerifyOutputs") == 1  # the retry stays inside the state
    assert run.main_path()[-2:] == ["NotifySuccess", "Ingested"]


def test_a_manifest_with_nothing_to_load_finishes_the_load_without_polling(stack: MotoStack) -> None:
    sm = deployed(stack)
    script(stack, submit=[NOTHING_TO_LOAD])

    run = sm.run(EXECUTION_INPUT)

    assert run.status == "SUCCEEDED", run.failure()
    assert run.branch(LOAD_STATES) == ["WarehouseConfigured", "RedshiftLoad", "LoadSubmitted", "LoadFinished"]
    assert payloads(stack, "redshift-load", "status") == []


def test_without_a_warehouse_the_load_branch_is_skipped(stack: MotoStack) -> None:
    sm = deployed(stack, warehouse=False)
    script(stack)

    run = sm.run(EXECUTION_INPUT)

    assert run.status == "SUCCEEDED", run.failure()
    assert run.branch(LOAD_STATES) == ["WarehouseConfigured", "LoadSkipped"]
    assert payloads(stack, "redshift-load") == []


# What each Lambda task of the ASL sends (its Parameters.Payload keys), by function and action.
SENT = {
    ("transform", None): set(EXECUTION_INPUT),
    ("transform", "verify"): {"action", "manifest"},
    ("transform", "register"): {"action", "manifest"},
    ("redshift-load", "submit"): {"action", "dataset", "manifest"},
    ("redshift-load", "status"): {"action", "statement_id"},
    # the trades-history state machine's load
    ("redshift-load", "submit_tables"): {"action", "run", "tables"},
}


def sample_key(path) -> tuple[str, str | None]:
    fn = path.parent.name
    return fn, json.loads(path.read_text(encoding="utf-8")).get("action")


def task_input_samples() -> list:
    """The samples of the task inputs the state machine sends (redshift-load's setup is run by hand)."""
    found = (p for fn in ("transform", "redshift-load") for p in (EVENTS / fn).glob("*.json"))
    return sorted(p for p in found if sample_key(p) in SENT)


@pytest.mark.parametrize("sample", task_input_samples(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_event_samples_of_task_inputs_carry_what_the_state_machine_sends(sample) -> None:
    """events/<function>/*.json are the task inputs `cargo lambda invoke` uses: each one holds every
    key the ASL sends for its action (the transform's is the execution input, exactly)."""
    data = json.loads(sample.read_text(encoding="utf-8"))
    key = sample_key(sample)
    if key == ("transform", None):
        assert set(data) == SENT[key]
    else:
        assert SENT[key] <= set(data), f"{sample} lacks {sorted(SENT[key] - set(data))}"
