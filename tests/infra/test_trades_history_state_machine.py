"""The real trades-history ASL, executed by moto's Step Functions interpreter.

The Lambdas answer through the router with the shapes of `functions/trades-history` and
`functions/redshift-load`; Glue (BatchCreatePartition) and SageMaker (the training job, the model
and the endpoint configuration) are moto's own, so the partitions and the model the execution
creates are read back from moto. moto has no UpdateEndpoint: the router answers it and records
the request. moto's interpreter cannot serialise the timestamps of an aws-sdk task's result into
the execution history, so the router answers DescribeTrainingJob from moto's own job with its
timestamp fields left out.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest

from conftest import ACCOUNT, MotoStack
from executions import Deployed, Run, lambda_arn
from router import FunctionError, by_action, scripted
from support import EVENTS, STATEMACHINES

ASL = STATEMACHINES / "trades-history.asl.json"
FN = {"trades-history": "lago-test-trades-history", "redshift-load": "lago-test-redshift-load"}
BUCKET = "lago-lake-test"
MAX_POLLS = 3
MAX_ROUNDS = 2
ENDPOINT = "lago-test-recommendations"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
SAGEMAKER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/lago-test-sagemaker"

LOAD_STATES = {"StartLoad", "RedshiftLoad", "LoadSubmitted", "WaitForLoad", "RedshiftLoadStatus", "CountLoadPoll", "LoadState"}
TRAINING_STATES = {
    "NameModel", "Train", "CountTrainingPoll", "WaitForTraining", "TrainingStatus", "TrainingState",
    "CreateModel", "CreateEndpointConfig", "UpdateEndpoint",
}  # fmt: skip


def day_folder(day: str) -> str:
    y, m, d = day.split("-")
    return f"s3://{BUCKET}/processed/trades/year={y}/month={m}/day={d}/"


def partition(day: str) -> dict[str, Any]:
    """A `partitions` item as trades-history writes it (lago::history::partition_input)."""
    return {
        "Values": day.split("-"),
        "StorageDescriptor": {
            "Location": day_folder(day),
            "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            "SerdeInfo": {
                "SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                "Parameters": {"serialization.format": "1"},
            },
            "Columns": [{"Name": "trade_id", "Type": "string"}, {"Name": "usd_amount", "Type": "decimal(14,2)"}],
        },
    }


FEATURES = {
    "trades": 9120, "users": 400, "rows": 11873, "training_rows": 9073, "not_replayable": 0,
    "last_day": "2026-11-29",
    "outputs": [{"key": "processed/features/user_features/user_features.parquet", "rows": 11873, "bytes": 402311}],
    "duration_ms": 800,
}  # fmt: skip
FEATURES_LOAD = {"table": "user_features", "parts": [f"s3://{BUCKET}/processed/features/user_features/user_features.parquet"]}


def history(days: list[str], *, rows: int = 412, pending: int = 0, features: dict[str, Any] | None = FEATURES) -> dict[str, Any]:
    """What trades-history answers: `rows` new rows in every one of `days`, or nothing new."""
    loads = [{"table": "trades_history", "parts": [day_folder(d) for d in days]}] if rows else []
    if features is not None:
        loads.append(FEATURES_LOAD)
    return {
        "days": days, "objects": 3, "already_processed": 0 if rows else 3, "pending": pending,
        "unreadable": 0, "rows": rows, "repeats": 1, "invalid": 0, "rows_without_trm": 0,
        "parts": len(days) if rows else 0,
        "load": loads,
        "partitions": [partition(d) for d in days] if rows else [],
        "features": features,
        "training_set": f"s3://{BUCKET}/processed/features/training/train.csv" if features else None,
        "duration_ms": 2310,
    }  # fmt: skip


NOTHING_NEW = history(["2026-11-28", "2026-11-29"], rows=0, features=None)
STATEMENT_ID = "9d8e7f6a-5b4c-4d3e-8f2a-1b0c9d8e7f6a"
SUBMITTED = {"statement_id": STATEMENT_ID, "statement_name": "lago-load-tables-0123456789abcdef", "state": "SUBMITTED",
             "statements": 10, "tables": ["trades_history", "user_features"]}  # fmt: skip
STARTED = {"statement_id": STATEMENT_ID, "state": "STARTED", "error": None}
FINISHED = {"statement_id": STATEMENT_ID, "state": "FINISHED", "error": None}


class Machine:
    """The state machine in moto with its own Glue database (and trades_history table)."""

    def __init__(self, stack: MotoStack, *, warehouse: bool = True, training: bool = False):
        self.stack = stack
        self.glue = stack.client("glue")
        self.database = f"lago_test_processed_{uuid.uuid4().hex[:8]}"
        self.glue.create_database(DatabaseInput={"Name": self.database})
        self.glue.create_table(
            DatabaseName=self.database,
            TableInput={
                "Name": "trades_history",
                "PartitionKeys": [{"Name": k, "Type": "string"} for k in ("year", "month", "day")],
                "StorageDescriptor": {"Location": f"s3://{BUCKET}/processed/trades/", "Columns": [{"Name": "trade_id", "Type": "string"}]},
            },
        )
        self.deployed = Deployed(
            stack,
            ASL,
            {
                "TradesHistoryFunctionArn": lambda_arn(FN["trades-history"]),
                "RedshiftLoadFunctionArn": lambda_arn(FN["redshift-load"]),
                "ProcessedDatabaseName": self.database,
                "WarehouseEnabled": "true" if warehouse else "false",
                "TrainingEnabled": "true" if training else "false",
                "HistoryMaxRounds": str(MAX_ROUNDS),
                "LoadPollSeconds": "0",
                "LoadMaxPolls": str(MAX_POLLS),
                "TrainingPollSeconds": "0",
                "TrainingMaxPolls": str(MAX_POLLS),
                "EnvironmentName": "test",
                "LakeBucketName": BUCKET,
                "LakeKeyArn": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/0b3c1e5e-8d6f-4c59-9d5a-6f1e0c2b7a41",
                "TrainingImage": IMAGE,
                "TrainingInstanceType": "ml.m5.large",
                "SageMakerRoleArn": SAGEMAKER_ROLE,
                "SageMakerEndpointName": ENDPOINT,
            },
            branch_states=LOAD_STATES | TRAINING_STATES,
        )

    def run(self, execution_input: dict[str, Any]) -> Run:
        return self.deployed.run(execution_input)

    def partitions(self) -> list[tuple[list[str], str]]:
        got = self.glue.get_partitions(DatabaseName=self.database, TableName="trades_history")["Partitions"]
        return sorted((p["Values"], p["StorageDescriptor"]["Location"]) for p in got)


def script(stack: MotoStack, *, history_answers: list[Any], submit: list[Any] | None = None, status: list[Any] | None = None) -> None:
    stack.router.register(FN["trades-history"], scripted(history_answers))
    stack.router.register(
        FN["redshift-load"],
        by_action({"submit_tables": scripted(submit or [SUBMITTED]), "status": scripted(status or [STARTED, FINISHED])}),
    )


def payloads(stack: MotoStack, fn: str, action: str | None = None) -> list[Any]:
    return [c.payload for c in stack.router.calls(FN[fn]) if action is None or c.payload.get("action") == action]


def without_timestamps(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timestamps(v) for k, v in value.items() if not isinstance(v, datetime)}
    if isinstance(value, list):
        return [without_timestamps(v) for v in value if not isinstance(v, datetime)]
    return value


def sagemaker_through_the_router(stack: MotoStack) -> list[dict[str, Any]]:
    """DescribeTrainingJob from moto without timestamps, UpdateEndpoint recorded; returns the updates."""
    sagemaker = stack.client("sagemaker")
    updates: list[dict[str, Any]] = []

    def describe(request: dict[str, Any]) -> dict[str, Any]:
        job = sagemaker.describe_training_job(TrainingJobName=request["TrainingJobName"])
        job.pop("ResponseMetadata", None)
        return without_timestamps(job)

    def update(request: dict[str, Any]) -> dict[str, Any]:
        updates.append(request)
        return {"EndpointArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/{request['EndpointName']}"}

    stack.router.register_operation("SageMaker.DescribeTrainingJob", describe)
    stack.router.register_operation("SageMaker.UpdateEndpoint", update)
    return updates


# --- scenarios -------------------------------------------------------------------------------


def test_the_scheduled_run_catalogs_and_loads_the_new_days_then_notifies(stack: MotoStack) -> None:
    # GIVEN an archive with new trades on both days of the scheduled request
    sm = Machine(stack)
    days = ["2026-11-28", "2026-11-29"]
    script(stack, history_answers=[history(days)])

    # WHEN the schedule starts an execution with its constant input {}
    run = sm.run({})

    # THEN the task gets {} as its request, the two days become Glue partitions, and the load
    # (both day folders, then the features) is polled to FINISHED
    assert run.status == "SUCCEEDED", run.failure()
    assert payloads(stack, "trades-history") == [{}]
    assert run.main_path() == [
        "Prepare", "History", "CountRound", "NewPartitions", "RegisterPartitions", "WarehouseConfigured",
        "MoreToDo", "TrainingConfigured", "NotifySuccess", "Done",
    ]  # fmt: skip
    assert run.branch(LOAD_STATES) == [
        "StartLoad", "RedshiftLoad", "LoadSubmitted", "WaitForLoad", "RedshiftLoadStatus", "CountLoadPoll", "LoadState",
        "WaitForLoad", "RedshiftLoadStatus", "CountLoadPoll", "LoadState",
    ]  # fmt: skip
    assert sm.partitions() == [(d.split("-"), day_folder(d)) for d in days]
    [submit] = payloads(stack, "redshift-load", "submit_tables")
    assert submit == {"action": "submit_tables", "run": f"{run.desc['executionArn']}/1", "tables": history(days)["load"]}
    assert payloads(stack, "redshift-load", "status") == [{"action": "status", "statement_id": STATEMENT_ID}] * 2
    [note] = run.notifications
    assert note["event"] == "TradesHistorySucceeded"
    assert (note["rounds"], note["days"], note["rows"], note["pending"]) == (1, days, 412, 0)
    assert note["features"]["training_rows"] == FEATURES["training_rows"]


def test_a_dated_run_sends_its_date_and_a_partition_that_exists_is_no_error(stack: MotoStack) -> None:
    # GIVEN the day's partition already in the catalog (an earlier hourly run)
    sm = Machine(stack)
    script(stack, history_answers=[history(["2026-11-28"]), history(["2026-11-28"])])
    assert sm.run({}).status == "SUCCEEDED"

    # WHEN the day is run on demand
    run = sm.run({"date": "2026-11-28"})

    # THEN the task gets exactly the execution input, and the partition stays one
    assert run.status == "SUCCEEDED", run.failure()
    assert payloads(stack, "trades-history")[-1] == {"date": "2026-11-28"}
    assert "RegisterPartitions" in run.path
    assert sm.partitions() == [(["2026", "11", "28"], day_folder("2026-11-28"))]


def test_the_sample_dated_input_is_what_the_task_takes() -> None:
    import json

    sample = json.loads((EVENTS / "trades-history-dated.json").read_text(encoding="utf-8"))
    assert set(sample) == {"date"}


def test_a_rerun_with_nothing_new_loads_and_catalogs_nothing(stack: MotoStack) -> None:
    sm = Machine(stack)
    script(stack, history_answers=[NOTHING_NEW])

    run = sm.run({})

    assert run.status == "SUCCEEDED", run.failure()
    assert run.path == ["Prepare", "History", "CountRound", "NewPartitions", "WarehouseConfigured", "MoreToDo",
                        "TrainingConfigured", "NotifySuccess", "Done"]  # fmt: skip
    assert payloads(stack, "redshift-load") == []
    assert sm.partitions() == []
    [note] = run.notifications
    assert (note["rows"], note["features"]) == (0, None)


def test_pending_objects_get_another_round_up_to_the_limit(stack: MotoStack) -> None:
    # GIVEN a task that runs out of time every round
    sm = Machine(stack)
    day = ["2026-11-29"]
    script(stack, history_answers=[history(day, pending=5), history(day, pending=2), history(day)], status=[FINISHED])

    run = sm.run({})

    # THEN each round is loaded under its own run id, and the rounds stop at HistoryMaxRounds
    # with the rest left to the next execution
    assert run.status == "SUCCEEDED", run.failure()
    assert len(payloads(stack, "trades-history")) == MAX_ROUNDS
    assert [p["run"].rsplit("/", 1)[1] for p in payloads(stack, "redshift-load", "submit_tables")] == ["1", "2"]
    [note] = run.notifications
    assert (note["rounds"], note["pending"]) == (MAX_ROUNDS, 2)


def test_a_failed_load_fails_the_execution_with_the_statement_error(stack: MotoStack) -> None:
    sm = Machine(stack)
    error = "ERROR: S3ServiceException: Access Denied"
    script(stack, history_answers=[history(["2026-11-29"])], status=[{**FINISHED, "state": "FAILED", "error": error}])

    run = sm.run({})

    assert run.status == "FAILED"
    assert run.main_path()[-3:] == ["LoadFailed", "NotifyFailure", "HistoryFailed"]
    failed, cause = run.failure()
    assert failed == "LoadFailed" and error in cause
    [note] = run.notifications
    assert (note["event"], note["error"], note["request"]) == ("TradesHistoryFailed", "LoadFailed", {})


def test_a_load_that_never_finishes_times_out_after_the_poll_limit(stack: MotoStack) -> None:
    sm = Machine(stack)
    script(stack, history_answers=[history(["2026-11-29"])], status=[STARTED])

    run = sm.run({})

    assert run.status == "FAILED"
    assert len(payloads(stack, "redshift-load", "status")) == MAX_POLLS
    assert run.failure()[0] == "LoadTimeout"


def test_without_a_warehouse_the_days_are_still_cataloged(stack: MotoStack) -> None:
    sm = Machine(stack, warehouse=False)
    script(stack, history_answers=[history(["2026-11-29"])])

    run = sm.run({})

    assert run.status == "SUCCEEDED", run.failure()
    assert payloads(stack, "redshift-load") == []
    assert len(sm.partitions()) == 1


@pytest.mark.parametrize(
    ("answers", "failures", "error"),
    [
        ([FunctionError("Retryable", "S3 SlowDown"), history(["2026-11-29"])], ["Retryable"], None),
        ([FunctionError("InvalidInput", "the task input must be {} or {\"date\"}")], ["InvalidInput"], "InvalidInput"),
    ],
    ids=["retryable-is-retried", "invalid-input-is-caught"],
)
def test_task_errors_are_retried_or_caught(stack: MotoStack, answers: list[Any], failures: list[str], error: str | None) -> None:
    sm = Machine(stack)
    script(stack, history_answers=answers, status=[FINISHED])

    run = sm.run({})

    assert run.task_failures() == failures
    assert run.path.count("History") == 1  # a retry stays inside the state
    assert run.failure()[0] == error
    assert run.status == ("SUCCEEDED" if error is None else "FAILED")


def test_the_training_branch_trains_then_moves_the_endpoint_to_a_new_model(stack: MotoStack) -> None:
    # GIVEN training enabled, rebuilt features with labelled rows, and the endpoint trades-stream asks
    sm = Machine(stack, training=True)
    script(stack, history_answers=[history(["2026-11-29"])], status=[FINISHED])
    updates = sagemaker_through_the_router(stack)

    run = sm.run({})

    # THEN a training job on the training set, a model from its artifact, a serverless endpoint
    # configuration, and the endpoint moved to it — all under one name per execution
    assert run.status == "SUCCEEDED", run.failure()
    assert run.branch(TRAINING_STATES) == [
        "NameModel", "Train", "CountTrainingPoll", "WaitForTraining", "TrainingStatus", "TrainingState",
        "CreateModel", "CreateEndpointConfig", "UpdateEndpoint",
    ]  # fmt: skip
    sagemaker = stack.client("sagemaker")
    [name] = [u["EndpointConfigName"] for u in updates]
    assert name.startswith("lago-test-") and len(name) <= 63
    job = sagemaker.describe_training_job(TrainingJobName=name)
    source = job["InputDataConfig"][0]["DataSource"]["S3DataSource"]
    assert source["S3Uri"] == f"s3://{BUCKET}/processed/features/training/train.csv"
    assert job["InputDataConfig"][0]["ContentType"] == "text/csv"
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert job["HyperParameters"]["objective"] == "binary:logistic"
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/models/recommendation/"
    model = sagemaker.describe_model(ModelName=name)
    assert model["PrimaryContainer"]["ModelDataUrl"] == job["ModelArtifacts"]["S3ModelArtifacts"]
    config = sagemaker.describe_endpoint_config(EndpointConfigName=name)
    assert config["ProductionVariants"][0]["ModelName"] == name
    assert updates == [{"EndpointName": ENDPOINT, "EndpointConfigName": name}]


def test_no_training_without_new_features_or_labelled_rows(stack: MotoStack) -> None:
    sm = Machine(stack, training=True)
    script(stack, history_answers=[NOTHING_NEW, history(["2026-11-29"], features={**FEATURES, "training_rows": 0})], status=[FINISHED])

    assert sm.run({}).branch(TRAINING_STATES) == []
    assert sm.run({}).branch(TRAINING_STATES) == []


def test_a_training_job_that_fails_fails_the_execution_without_a_new_model(stack: MotoStack) -> None:
    # GIVEN a training job SageMaker reports InProgress, then Failed
    sm = Machine(stack, training=True)
    script(stack, history_answers=[history(["2026-11-29"])], status=[FINISHED])
    updates = sagemaker_through_the_router(stack)
    states = iter(["InProgress", "Failed"])
    stack.router.register_operation(
        "SageMaker.DescribeTrainingJob",
        lambda req: {"TrainingJobName": req["TrainingJobName"], "TrainingJobStatus": next(states), "FailureReason": "AlgorithmError"},
    )

    run = sm.run({})

    # THEN the branch polls twice, fails with TrainingFailed, and the endpoint is not touched
    assert run.status == "FAILED"
    assert run.path.count("TrainingStatus") == 2
    assert "CreateModel" not in run.path and updates == []
    error, cause = run.failure()
    assert error == "TrainingFailed" and "Failed" in cause
    [note] = run.notifications
    assert (note["event"], note["error"]) == ("TradesHistoryFailed", "TrainingFailed")
