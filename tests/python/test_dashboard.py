"""The demo end to end as a person sees it: `lago demo --size small`, then the dashboard opened in
headless Chromium — a real screenshot that is not blank, every chart present, no console errors —
and a second run over the same lake that leaves the warehouse counts unchanged.

Needs LAGO_BIN (a lago build with the warehouse feature) and Chromium (`chromium` on PATH or
LAGO_CHROMIUM); the test command installs Debian's chromium package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import duckdb
import pytest

CHART_IDS = [
    "energy_by_type",
    "energy_by_month",
    "top_clients",
    "supplier_mix",
    "client_segments",
    "rejects",
    "trm",
    "daily_cop_volume",
    "active_users",
    "spread_vs_trm",
    "top_users",
    "pipeline_timings",
]


def lago_bin() -> str:
    b = os.environ.get("LAGO_BIN")
    if not b:
        pytest.fail("LAGO_BIN is not set: point it at a lago binary")
    return b


def chromium() -> str:
    c = os.environ.get("LAGO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not c:
        pytest.fail("Chromium is required: install Debian's chromium package (the test command does)")
    return c


CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


def run_demo(lake: Path) -> dict:
    env = dict(os.environ, LAGO_PII_SALT="dashboard-test")
    p = subprocess.run(
        [lago_bin(), "demo", "--size", "small", "--lake", str(lake), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def png_facts(path: Path) -> tuple[int, int, int, int]:
    """Width, height, compressed image bytes and distinct sampled byte triples of a PNG.

    A blank page compresses to a few kilobytes of one repeated colour; a drawn dashboard does not.
    (Rows are sampled in their filtered form, which keeps this fast and still tells flat from drawn.)
    """
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = len(raw) // max(height, 1)
    triples = set()
    for y in range(0, height, 25):
        row = raw[y * stride + 1 : (y + 1) * stride]
        for x in range(0, len(row) - 3, 61):
            triples.add(row[x : x + 3])
    return width, height, len(idat), len(triples)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    lake = tmp_path_factory.mktemp("demo") / "lake"
    first = run_demo(lake)
    second = run_demo(lake)
    return lake, first, second


def test_demo_accounts_for_every_generated_row(demo_runs):
    _, first, _ = demo_runs
    assert first["balanced"] is True
    for name, d in first["datasets"].items():
        assert d["rows_ok"] + d["rows_rejected"] == d["rows_generated"], name
        assert d["rows_ok"] == d["rows_clean"], name
        assert d["rows_rejected"] > 0, f"{name}: the demo should show rejects"
        assert d["warehouse_rows"] > 0, name
    # Keyed dimensions: the warehouse holds one row per key, at most the accepted rows.
    assert first["datasets"]["clientes"]["warehouse_rows"] <= first["datasets"]["clientes"]["rows_ok"]
    # Every TRM export rates the same days from 2024-12-31: upserted on vigenciadesde, one row a day.
    trm = first["datasets"]["trm"]
    assert trm["files"] == 3 and trm["warehouse_rows"] * trm["files"] == trm["rows_ok"]
    t = first["trades"]
    assert t["applied"] > 0 and t["duplicates"] > 0
    # Every record ends applied, duplicate or rejected with a reason; every valid trade applies.
    assert t["applied"] == t["valid_generated"]
    assert t["applied"] + t["duplicates"] + sum(t["rejected"].values()) == t["records"]
    assert t["rejected"]["insufficient_balance"] > 0
    # The trade history: one row per decided trade (applied or rejected), each with its rate.
    assert t["history_rows"] == t["applied"] + t["rejected"]["insufficient_balance"]
    assert t["history_without_trm"] == 0
    # Two months of trades: a row per user and day, and labelled rows for the training set.
    assert t["feature_rows"] > t["portfolios"] and t["training_rows"] > 0
    stages = [s["stage"] for s in first["stages"]]
    assert stages == ["generate", "transform", "catalog", "load", "trades", "history", "report"]
    assert first["idempotent"] is None


def test_second_run_leaves_warehouse_counts_unchanged(demo_runs):
    _, first, second = demo_runs
    before = {k: v["warehouse_rows"] for k, v in first["datasets"].items()}
    after = {k: v["warehouse_rows"] for k, v in second["datasets"].items()}
    assert after == before
    assert second["trades"]["history_rows"] == first["trades"]["history_rows"]
    assert second["trades"]["feature_rows"] == first["trades"]["feature_rows"]
    assert second["previous_warehouse_rows"] == {**before, "trades_history": first["trades"]["history_rows"]}
    assert second["idempotent"] is True


def test_catalog_lists_tables_columns_and_partitions(demo_runs):
    lake, _, _ = demo_runs
    catalog = json.loads((lake / "catalog" / "catalog.json").read_text())
    tables = {t["name"]: t for t in catalog["tables"]}
    assert set(tables) == {"clientes", "proveedores", "transacciones", "trm"}
    assert len(tables["transacciones"]["partitions"]) == 3
    assert len(tables["trm"]["partitions"]) == 3
    cols = {c["name"]: c for c in tables["clientes"]["columns"]}
    assert cols["email_masked"]["pii"] is True
    assert cols["fecha_registro"]["type"] == "date"


def test_kpi_views_read_by_duckdb_agree_with_the_run(demo_runs):
    """Another DuckDB (Python's) reads the views lago created and finds the run's figures."""
    lake, first, _ = demo_runs
    t = first["trades"]
    con = duckdb.connect(str(lake / "warehouse.duckdb"), read_only=True)
    try:
        views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE schema_name = 'lago' AND view_name LIKE 'kpi_%'").fetchall()]
        assert len(views) >= 13, views
        for view in views:
            (n,) = con.execute(f"SELECT count(*) FROM lago.{view}").fetchone()
            assert n > 0, view
        decided, rejected = con.execute(
            "SELECT decided, rejected FROM lago.kpi_rejection_rate WHERE reason = '(all)'"
        ).fetchone()
        assert decided == t["history_rows"]
        assert rejected == t["rejected"]["insufficient_balance"]
        (applied,) = con.execute("SELECT sum(trades) FROM lago.kpi_daily_cop_volume").fetchone()
        assert applied == t["applied"]
        (by_user,) = con.execute("SELECT sum(trades) FROM lago.kpi_top_users").fetchone()
        assert by_user == t["applied"]
        (without_trm,) = con.execute("SELECT sum(trades_without_trm) FROM lago.kpi_daily_spread").fetchone()
        assert without_trm == 0
        (transactions,) = con.execute("SELECT sum(transactions) FROM lago.kpi_energy_by_type").fetchone()
        assert transactions == first["datasets"]["transacciones"]["warehouse_rows"]
    finally:
        con.close()


def test_dashboard_renders_in_chromium_with_every_chart_and_no_errors(demo_runs, tmp_path):
    lake, _, _ = demo_runs
    page = (lake / "report" / "index.html").resolve()
    html = page.read_text(encoding="utf-8")
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    for cid in CHART_IDS:
        assert f'data-chart="{cid}"' in html, cid

    profile = tmp_path / "profile"
    shot = tmp_path / "dashboard.png"
    p = subprocess.run(
        [
            chromium(),
            *CHROME_FLAGS,
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--hide-scrollbars",
            "--window-size=1400,2400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    console_errors = [l for l in p.stderr.splitlines() if "CONSOLE" in l and ("ERROR" in l or "Uncaught" in l)]
    assert console_errors == []

    width, height, compressed, distinct = png_facts(shot)
    assert (width, height) == (1400, 2400)
    assert compressed > 40_000 and distinct > 50, f"the screenshot looks blank ({compressed} bytes, {distinct} values)"
    out = os.environ.get("LAGO_SCREENSHOT_OUT")
    if out:
        shutil.copyfile(shot, out)

    # The DOM Chromium built has every chart, each with its drawing.
    dom = subprocess.run(
        [chromium(), *CHROME_FLAGS, f"--user-data-dir={profile}-dom", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    sections = re.findall(r'<section class="chart" data-chart="([a-z_]+)">(.*?)</section>', dom.stdout, re.S)
    found = {cid: body for cid, body in sections}
    assert sorted(found) == sorted(CHART_IDS)
    for cid, body in found.items():
        assert "<svg" in body and ("<rect" in body or "<polyline" in body or "<circle" in body), cid
