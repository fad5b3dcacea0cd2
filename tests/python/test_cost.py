"""The arithmetic of scripts/cost.py: prices, minimum charges, transitions counted from a history,
request classes, the duration model and the choice of a size. No measurement runs here
(`scripts/cost.sh` does that).

Run: ``.venv/bin/python -m pytest -q tests/python/test_cost.py``.
"""

from __future__ import annotations

import importlib.util
from decimal import Decimal
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cost.py"
spec = importlib.util.spec_from_file_location("cost", SCRIPT)
cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cost)  # type: ignore[union-attr]

MIB = 1 << 20


def test_a_lambda_second_at_one_gb_is_the_gb_second_price_plus_the_request() -> None:
    assert cost.lambda_cost(1.0, 1024) == Decimal("0.0000133334") + Decimal("0.0000002")


def test_lambda_duration_is_rounded_up_to_the_millisecond() -> None:
    # GIVEN 0.2 ms and 1.0 ms at the same size THEN both are billed as 1 ms
    assert cost.lambda_cost(0.0002, 2048) == cost.lambda_cost(0.001, 2048)
    assert cost.lambda_cost(0.0011, 2048) > cost.lambda_cost(0.001, 2048)


def test_ephemeral_storage_above_512_mb_is_billed_for_the_duration() -> None:
    extra = cost.lambda_cost(2.0, 256, ephemeral_mb=1536) - cost.lambda_cost(2.0, 256)
    assert extra == 2 * Decimal("0.0000000309")


def test_a_short_crawler_run_is_billed_its_ten_minute_minimum() -> None:
    per_run = cost.crawler_run_cost(45)
    assert per_run == Decimal("0.44") / 6
    assert per_run == cost.crawler_run_cost(600)
    assert cost.crawler_run_cost(1200) == 2 * per_run


def test_a_glue_job_run_is_two_dpus_for_at_least_a_minute() -> None:
    assert cost.glue_job_run_cost(10) == Decimal("0.88") / 60
    assert round(cost.glue_job_run_cost(10), 5) == Decimal("0.01467")
    assert cost.glue_job_run_cost(180) == Decimal("0.044")


def test_transitions_are_the_states_entered_in_a_history() -> None:
    # GIVEN a history: a task, a parallel state with one state in each branch, a choice, succeed
    history = [
        {"type": "ExecutionStarted"},
        {"type": "TaskStateEntered", "stateEnteredEventDetails": {"name": "Transform"}},
        {"type": "TaskScheduled"},
        {"type": "TaskSucceeded"},
        {"type": "TaskStateExited"},
        {"type": "ParallelStateEntered", "stateEnteredEventDetails": {"name": "CatalogAndLoad"}},
        {"type": "ParallelStateStarted"},
        {"type": "TaskStateEntered", "stateEnteredEventDetails": {"name": "RegisterPartitions"}},
        {"type": "ChoiceStateEntered", "stateEnteredEventDetails": {"name": "WarehouseConfigured"}},
        {"type": "SucceedStateEntered", "stateEnteredEventDetails": {"name": "LoadSkipped"}},
        {"type": "ParallelStateExited"},
        {"type": "SucceedStateEntered", "stateEnteredEventDetails": {"name": "Ingested"}},
        {"type": "ExecutionSucceeded"},
    ]
    # THEN every state entered counts once, inside the branches too, and nothing else does
    assert cost.transitions(history) == 6
    assert cost.states_entered(history)[:2] == ["Transform", "CatalogAndLoad"]
    assert cost.PRICES["sfn_transition"] * cost.transitions(history) == Decimal("0.00015")


def test_s3_requests_are_priced_by_class_and_deletes_are_free() -> None:
    counts = {"s3:PutObject": 600, "s3:UploadPart": 400, "s3:GetObject": 900, "s3:HeadObject": 100, "s3:DeleteObject": 50}
    assert cost.requests_cost(counts) == {"s3": Decimal("0.005") + Decimal("0.0004")}


def test_catalog_sns_and_dynamodb_requests_are_priced_and_the_data_api_is_not() -> None:
    priced = cost.requests_cost(
        {"glue:BatchCreatePartition": 1_000_000, "sns:Publish": 2_000_000, "dynamodb:write_units": 1_000_000,
         "redshiftdata:BatchExecuteStatement": 5, "states:StartExecution": 1}
    )
    assert priced == {"glue": Decimal(1), "sns": Decimal(1), "dynamodb": Decimal("0.625")}


def test_dynamodb_units_of_a_transaction_and_a_batch_read() -> None:
    write = cost.dynamodb_units("TransactWriteItems", b'{"TransactItems": [{}, {}, {}]}')
    read = cost.dynamodb_units("BatchGetItem", b'{"RequestItems": {"t": {"Keys": [{}, {}, {}]}}}')
    assert (len(write), len(read)) == (6, 2)


@pytest.mark.parametrize(
    ("memory_mb", "parallelism", "seconds"),
    [(1769, 1, 3.5), (884.5, 1, 5.5), (3538, 1, 3.5), (3538, 2, 2.5), (7076, 8, 1.5 + 3 / 4)],
)
def test_cpu_time_stretches_below_one_vcpu_and_spreads_over_the_cores_above(memory_mb: float, parallelism: float, seconds: float) -> None:
    # GIVEN 2 s of CPU and 1.5 s of waiting (3 s of CPU for the last case)
    cpu = 3.0 if memory_mb == 7076 else 2.0
    assert cost.modelled_seconds(cpu, 1.5, memory_mb, parallelism) == pytest.approx(seconds)


def test_below_one_vcpu_a_measured_call_costs_the_same_cpu_and_more_wait_per_mb() -> None:
    # GIVEN a call measured at 1 s wall of which 0.8 s CPU
    call = {"wall_s": 1.0, "cpu_s": 0.8}
    # THEN at 1769 MB it lasts what it lasted; at a quarter of that, the CPU part four times as long
    assert cost.call_seconds(call, 1769) == pytest.approx(1.0)
    assert cost.call_seconds(call, 442) == pytest.approx(0.2 + 0.8 * 1769 / 442)


def test_the_chosen_size_is_the_cheapest_that_fits_and_is_fast_enough() -> None:
    # GIVEN a single-threaded call of 10 s CPU, 0.5 s wait, 100 MiB peak
    calls = [{"function": "f", "action": "task", "wall_s": 10.5, "cpu_s": 10.0, "peak_rss": 100 * MIB}]
    rows = cost.curve(calls, "f")
    # THEN 128 MB does not hold 100 MiB twice over; 256 does, and is the cheapest within 150 s
    assert not next(r for r in rows if r["memory_mb"] == 128)["fits"]
    assert cost.choose(rows, 150.0) == 256
    # … and a tighter latency bound buys memory
    assert cost.choose(rows, 20.0) == 1024
