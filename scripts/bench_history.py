#!/usr/bin/env python3
"""Benchmark: `lago trades history` vs DuckDB, archived trades (NDJSON.gz) -> Parquet.

Usage
-----
    bash scripts/bench.sh --history [--trades 1000000] [--runs 3]
    # or, with a release lago and the test venv:
    LAGO_BIN=.../release/lago .venv/bin/python scripts/bench_history.py [--trades N] [--runs N]

What it does
------------
1. `lago trades generate --trades N --days 60 --dirty 3` and `lago trades replay --lake` build a
   lake whose `raw/trades/` holds the archive of N records (one object per 10,000-record batch,
   each line a trade and its decision), as trades-stream writes it.
2. Each run gets a fresh lake holding only that archive (hard links) and runs, in its own process
   started from a small launcher (peak RSS is the run's own):
     * `lago trades history --lake <lake> --json`: the archive -> enriched Parquet, one row per
       trade id (validation, dedup, enrichment with the official rate, manifests, rejects),
       then the per-user, per-day features and the training set. Its speed is the history
       step's own time (`history.duration_ms`, the same work as DuckDB's); its peak RSS is the
       whole process, features included.
     * DuckDB at 1 thread and at all threads:
       COPY (SELECT * FROM read_json('<archive>/**/*.ndjson.gz')) TO '<out>.parquet'
       (FORMAT parquet, COMPRESSION snappy) — reading and re-encoding only.
3. Prints seconds, lines/s and peak RSS per tool, and lago ÷ DuckDB at 1 thread (lago's history
   is one thread); writes <out>/bench-history.json and <out>/bench-history.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # noqa: E402  (the shared measuring helpers)
    BenchError,
    best_of,
    lago_env,
    machine_info,
    render_md,
    render_text,
    run_measured,
)


def worker(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench_history.py --worker")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--archive", required=True)
    p.add_argument("--output", required=True)
    a = p.parse_args(argv)
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads={int(a.threads)}")
    src = (a.archive.rstrip("/") + "/**/*.ndjson.gz").replace("'", "''")
    dst = a.output.replace("'", "''")
    t0 = time.perf_counter()
    res = con.execute(
        f"COPY (SELECT * FROM read_json('{src}', format = 'newline_delimited')) "
        f"TO '{dst}' (FORMAT parquet, COMPRESSION snappy)"
    ).fetchall()
    seconds = time.perf_counter() - t0
    json.dump({"seconds": seconds, "rows": int(res[0][0]), "version": duckdb.__version__}, sys.stdout)
    return 0


def fresh_lake(archive_lake: Path, work: Path, i: int) -> Path:
    lake = work / f"lake-{i}"
    shutil.rmtree(lake, ignore_errors=True)
    shutil.copytree(archive_lake / "raw" / "trades", lake / "raw" / "trades", copy_function=os.link)
    return lake


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trades", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="DuckDB's 'all threads' (default: usable cores)")
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    args = ap.parse_args()
    lago = os.environ.get("LAGO_BIN") or shutil.which("lago")
    if not lago:
        print("set LAGO_BIN to a release build of lago", file=sys.stderr)
        return 2
    threads = args.threads or len(os.sched_getaffinity(0))
    work = args.out / "history"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = lago_env()
    try:
        stream = work / "stream.ndjson"
        gen = json.loads(run_measured(
            [lago, "trades", "generate", "--trades", str(args.trades), "--users", str(args.users),
             "--days", "60", "--dirty", "3", "--out", str(stream), "--json"],
            env=env, what="lago trades generate")["stdout"])
        archive_lake = work / "archive"
        run_measured([lago, "trades", "replay", "--input", str(stream), "--batch-size", "10000",
                      "--lake", str(archive_lake), "--json"], env=env, what="lago trades replay")
        stream.unlink()
        archive = archive_lake / "raw" / "trades"
        objects = list(archive.rglob("*.ndjson.gz"))
        archive_bytes = sum(p.stat().st_size for p in objects)
        print(f"archive: {len(objects)} objects, {archive_bytes / 1e6:.1f} MB gzip, {gen['lines']} records", flush=True)

        runs = iter(range(10_000))

        def lago_run() -> dict:
            lake = fresh_lake(archive_lake, work, next(runs))
            r = run_measured([lago, "trades", "history", "--lake", str(lake), "--json"], env=env,
                             what="lago trades history")
            report = json.loads(r["stdout"])
            shutil.rmtree(lake, ignore_errors=True)
            h = report["history"]
            return {"seconds": h["duration_ms"] / 1000, "process_seconds": r["seconds"],
                    "rss_kib": r["rss_kib"], "lines": h["lines"], "rows": h["rows"],
                    "features_ms": (report.get("features") or {}).get("duration_ms")}

        def duck_run(n: int):
            def run() -> dict:
                out = work / "duckdb.parquet"
                r = run_measured([sys.executable, __file__, "--worker", "--threads", str(n),
                                  "--archive", str(archive), "--output", str(out)], what="duckdb")
                res = json.loads(r["stdout"])
                out.unlink(missing_ok=True)
                return {"seconds": res["seconds"], "process_seconds": r["seconds"],
                        "rss_kib": r["rss_kib"], "lines": res["rows"], "rows": res["rows"],
                        "version": res["version"]}
            return run

        results = [
            {"tool": "lago trades history", "threads": 1, **best_of(args.runs, "lago history", lago_run)},
            {"tool": "DuckDB", "threads": 1, **best_of(args.runs, "duckdb 1 thread", duck_run(1))},
        ]
        if threads > 1:
            results.append({"tool": "DuckDB", "threads": threads,
                            **best_of(args.runs, f"duckdb {threads} threads", duck_run(threads))})
        headers = ["tool", "threads", "seconds", "lines/s", "peak RSS MiB"]
        rows = [[r["tool"], str(r["threads"]), f"{r['seconds']:.3f}",
                 f"{r['lines'] / r['seconds'] / 1e3:.0f} k", f"{r['rss_kib'] / 1024:.1f}"] for r in results]
        ratio = results[1]["seconds"] / results[0]["seconds"]
        text = render_text(headers, rows)
        summary = (f"lago ÷ DuckDB at 1 thread: {ratio:.2f}× (>1: lago faster); lago's whole process "
                   f"(history + features): {results[0]['process_seconds']:.3f} s, features "
                   f"{results[0]['features_ms']} ms; peak RSS {results[0]['rss_kib'] / 1024:.1f} MiB")
        print("\n" + text + "\n" + summary)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench-history.md").write_text(render_md(headers, rows) + "\n\n" + summary + "\n")
        (args.out / "bench-history.json").write_text(json.dumps(
            {"machine": machine_info(), "trades": args.trades, "archive_objects": len(objects),
             "archive_bytes": archive_bytes, "generated": gen, "results": results, "ratio_1_thread": ratio},
            indent=2, default=str))
        return 0
    except BenchError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(worker(sys.argv[2:]))
    sys.exit(main())
