"""KPL-aggregated Kinesis records, written by a real implementation of the KPL format (the
``aws-kinesis-agg`` package), replayed through the same decoding as the trades-stream function
(``lago trades replay --kinesis-event``): the portfolios must be exactly those of the same trades
sent one per record, and an aggregate whose digest does not match is dead-lettered, not lost.

Run: ``LAGO_BIN=$CARGO_TARGET_DIR/debug/lago .venv/bin/pytest -q tests/python/test_kpl.py``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

TRADES = 1_500
USERS = 40


@pytest.fixture(scope="module")
def lago_bin() -> str:
    path = os.environ.get("LAGO_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("LAGO_BIN must point to a built lago binary", pytrace=False)
    return path


def lago(lago_bin: str, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([lago_bin, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == expect, done.stderr
    return done


@pytest.fixture(scope="module")
def trades(lago_bin: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """A dirty generated stream: one JSON line per record (some of them not valid trades)."""
    out = tmp_path_factory.mktemp("kpl") / "trades.ndjson"
    lago(lago_bin, "trades", "generate", "--trades", str(TRADES), "--users", str(USERS), "--dirty", "5", "--out", str(out))
    return [{"pk": f"pk-{i % 7}", "data": line.encode()} for i, line in enumerate(out.read_text().splitlines()) if line]


def event(records: list[tuple[str, bytes]]) -> dict[str, Any]:
    """A Kinesis event in the Lambda's shape: one entry per Kinesis record, in stream order."""
    return {
        "Records": [
            {
                "eventID": f"shardId-000000000000:{49_600_000_000 + i}",
                "eventSource": "aws:kinesis",
                "kinesis": {
                    "partitionKey": pk,
                    "data": base64.b64encode(data).decode(),
                    "sequenceNumber": str(49_600_000_000 + i),
                    "approximateArrivalTimestamp": 1_795_971_600.0 + i,
                },
            }
            for i, (pk, data) in enumerate(records)
        ]
    }


def aggregated(trades: list[dict[str, Any]], max_size: int) -> list[tuple[str, bytes, int]]:
    """The stream as the KPL format packs it: user records into aggregates of at most
    `max_size` bytes, each with the number of user records it holds."""
    agg = RecordAggregator(max_size=max_size)
    out = []
    for t in trades:
        full = agg.add_user_record(t["pk"], t["data"])
        if full is not None:
            pk, _, data = full.get_contents()
            out.append((pk, data, full.get_num_user_records()))
    last = agg.clear_and_get()
    if last is not None:
        pk, _, data = last.get_contents()
        out.append((pk, data, last.get_num_user_records()))
    return out


def replay(lago_bin: str, path: Path, records: list[tuple[str, bytes]]) -> dict[str, Any]:
    path.write_text(json.dumps(event(records)))
    return json.loads(lago(lago_bin, "trades", "replay", "--kinesis-event", str(path), "--json").stdout)


def test_aggregated_records_give_the_portfolios_of_the_same_trades_sent_one_by_one(
    lago_bin: str, trades: list[dict[str, Any]], tmp_path: Path
) -> None:
    # GIVEN the same stream sent one trade per record, and packed by the KPL format
    one_by_one = [(t["pk"], t["data"]) for t in trades]
    packed = aggregated(trades, max_size=8_000)
    assert 10 < len(packed) < len(trades) / 5, len(packed)
    assert sum(n for _, _, n in packed) == len(trades)
    assert all(data[:4] == b"\xf3\x89\x9a\xc2" for _, data, _ in packed)

    # WHEN both are replayed as Kinesis events
    plain = replay(lago_bin, tmp_path / "plain.json", one_by_one)
    kpl = replay(lago_bin, tmp_path / "kpl.json", [(pk, data) for pk, data, _ in packed])

    # THEN every user record is a record, decided the same way, to the same portfolios
    assert kpl["records"] == plain["records"] == len(trades)
    for field in ("applied", "duplicates", "rejected", "dead_letters", "notifications"):
        assert kpl[field] == plain[field], field
    assert plain["applied"] > 0 and plain["dead_letters"] > 0
    strip = lambda ps: [{k: v for k, v in p.items() if k != "updated_at"} for p in ps]  # noqa: E731
    assert strip(kpl["portfolios"]) == strip(plain["portfolios"])
    assert len(kpl["portfolios"]) == USERS


def test_an_aggregate_whose_digest_does_not_match_is_dead_lettered_whole(
    lago_bin: str, trades: list[dict[str, Any]], tmp_path: Path
) -> None:
    # GIVEN aggregates of which the second has one byte changed in its body
    packed = [(pk, data) for pk, data, _ in aggregated(trades[:300], max_size=4_000)]
    users_in_it = aggregated(trades[:300], max_size=4_000)[1][2]
    assert len(packed) > 2 and users_in_it > 1
    pk, data = packed[1]
    broken = bytearray(data)
    broken[len(broken) // 2] ^= 0x01
    packed[1] = (pk, bytes(broken))

    # WHEN replayed
    out = replay(lago_bin, tmp_path / "broken.json", packed)

    # THEN that aggregate is one record dead-lettered as kpl_digest_mismatch, the others' user
    # records are all there
    assert out["rejected"].get("kpl_digest_mismatch") == 1, out["rejected"]
    assert out["records"] == 300 - users_in_it + 1

