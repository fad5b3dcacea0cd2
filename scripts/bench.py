#!/usr/bin/env python3
"""Benchmark: lago transform vs DuckDB vs pyarrow, CSV -> Parquet (Snappy), on one machine.

Usage
-----
    # a RELEASE build of lago, and a venv with tests/requirements.txt (pyarrow, duckdb)
    CARGO_TARGET_DIR=$HOME/.cache/lago/target cargo build --release -p lago-cli
    python3 -m venv .venv && .venv/bin/pip install --require-hashes --no-deps -r tests/requirements.txt
    LAGO_BIN=$HOME/.cache/lago/target/release/lago \\
        .venv/bin/python scripts/bench.py [--size-mb 200] [--big-size-mb 1000] [--out DIR]
        [--runs 3] [--threads N] [--keep]

What it does
------------
1. Generates a clean `transacciones` CSV of about --size-mb MB (1 MB = 10^6 bytes) with
   `lago generate`; the row count comes from a small pilot file (about 85 bytes per row).
2. On that same file, each run in its own process, started from a small launcher interpreter
   (so peak RSS, `wait4`'s ru_maxrss, is the run's own and not this interpreter's), each
   configuration --runs times, keeping the best time and the highest peak RSS:
     * `lago transform --threads 1` and `--threads <nproc>` (a fresh lake folder each run);
     * DuckDB `SET threads=1` / all threads:
       COPY (SELECT * FROM read_csv('<file>')) TO '<out>.parquet' (FORMAT parquet, COMPRESSION snappy)
     * pyarrow `pyarrow.csv.read_csv` + `pyarrow.parquet.write_table(compression='snappy')`, with
       `use_threads=False` (and pyarrow's CPU pool set to 1) / default threads.
3. Prints: tool, threads, seconds, MB/s (input MB / s), rows/s, peak RSS MiB; then the
   speed ratios lago/DuckDB and lago/pyarrow at equal thread counts (>1 means lago is faster).
4. Generates a --big-size-mb file and shows lago's peak RSS (all threads) at both sizes, to show
   memory does not grow with the input; then lago's peak RSS on the first file at the thread
   counts of --rss-threads (default 4 and 6, as on Lambda's larger sizes).
5. Writes <out>/bench.json (everything measured, plus machine and versions) and <out>/bench.md
   (a Markdown table ready for the README). Generated CSVs are deleted at the end unless --keep;
   each run's Parquet output is deleted right after the run.

Timing: lago's time is the wall time of its process (startup is a few ms). For DuckDB and pyarrow
the time is measured inside the worker around the conversion only, so the interpreter start and
the `import` of the library are not charged to them (the whole-process wall time is in
bench.json as `process_seconds`). Peak RSS is always the whole process.

Note on the comparison: on these files DuckDB and pyarrow infer every column as text (mixed date
formats, quoted thousands-grouped numbers), so they only split and re-encode strings; lago also
validates every record against the contract, types decimals/dates/timestamps, normalises enums,
computes `total`, checks duplicate keys and writes lineage, rejects and a manifest. The inferred
schemas are recorded in bench.json.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1_000_000
MIB = 1 << 20
PILOT_ROWS = 20_000
LOAD_DATE = "2025-01-01"


# --------------------------------------------------------------------------------------------
# Worker mode: one conversion by DuckDB or pyarrow, run in its own process.
# --------------------------------------------------------------------------------------------


def worker(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py --worker")
    p.add_argument("tool", choices=["duckdb", "pyarrow"])
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    a = p.parse_args(argv)

    if a.tool == "duckdb":
        import duckdb

        con = duckdb.connect()
        con.execute(f"SET threads={int(a.threads)}")
        src = a.input.replace("'", "''")
        dst = a.output.replace("'", "''")
        t0 = time.perf_counter()
        res = con.execute(
            f"COPY (SELECT * FROM read_csv('{src}')) TO '{dst}' (FORMAT parquet, COMPRESSION snappy)"
        ).fetchall()
        seconds = time.perf_counter() - t0
        rows = int(res[0][0]) if res and res[0] else None
        schema = [(r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{dst}')").fetchall()]
        used = con.execute("SELECT current_setting('threads')").fetchone()[0]
        version = duckdb.__version__
    else:
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        if a.threads == 1:
            pa.set_cpu_count(1)
            pa.set_io_thread_count(1)
        elif a.threads != pa.cpu_count():
            pa.set_cpu_count(a.threads)  # the default is every core; only differs with --threads
        use_threads = a.threads != 1
        t0 = time.perf_counter()
        # The generated files quote some values with line breaks in them (as real exports do);
        # pyarrow's parallel chunker needs to be told, or it loses track of the rows.
        table = pcsv.read_csv(
            a.input,
            read_options=pcsv.ReadOptions(use_threads=use_threads),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
        )
        pq.write_table(table, a.output, compression="snappy")
        seconds = time.perf_counter() - t0
        rows = table.num_rows
        schema = [(f.name, str(f.type)) for f in table.schema]
        used = 1 if a.threads == 1 else pa.cpu_count()
        version = pa.__version__
    json.dump(
        {"seconds": seconds, "rows": rows, "schema": schema, "threads_used": used, "version": version},
        sys.stdout,
    )
    return 0


# --------------------------------------------------------------------------------------------
# Running and measuring subprocesses
# --------------------------------------------------------------------------------------------


class BenchError(RuntimeError):
    pass


# Starts a measured command from a small, fresh interpreter: a process started straight from
# this one would inherit this interpreter's resident set as the floor of its peak RSS (Linux
# carries the high-water mark of the address space an exec replaces into the child's
# ru_maxrss), which hid every figure below it. The launcher times the command itself and
# reports "<seconds> <peak RSS KiB> <CPU seconds, user + system>" on the descriptor given as its
# first argument.
LAUNCHER = """
import os, sys, time
report = int(sys.argv[1])
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.close(report)
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
os.write(report, f"{time.perf_counter() - t0} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}".encode())
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(cmd: list[str], env: dict | None = None, what: str = "") -> dict:
    """Runs cmd, returns wall seconds, peak RSS (KiB), CPU seconds (user + system), stdout and stderr."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        rd, wr = os.pipe()
        try:
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", LAUNCHER, str(wr), *cmd],
                                    stdout=out, stderr=err, env=env, pass_fds=(wr,))
            os.close(wr)
            wr = -1
            with os.fdopen(rd, "rb") as r:
                rd = -1
                report = r.read().decode()
            proc.wait()
        finally:
            for fd in (rd, wr):
                if fd >= 0:
                    os.close(fd)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if proc.returncode != 0 or not report:
        raise BenchError(
            f"{what or cmd[0]} failed with exit code {proc.returncode}\n"
            f"command: {' '.join(cmd)}\n--- stderr ---\n{stderr[-6000:]}\n--- stdout ---\n{stdout[-2000:]}"
        )
    wall, rss, cpu = report.split()
    return {"seconds": float(wall), "rss_kib": int(rss), "cpu_seconds": float(cpu), "stdout": stdout, "stderr": stderr}


def lago_env() -> dict:
    env = dict(os.environ)
    env.setdefault("LAGO_PII_SALT", "bench-salt")  # transacciones holds no PII; avoids the warning
    env.setdefault("LAGO_LOG", "warn")
    return env


def generate(lago: str, rows: int, out: Path, seed: int) -> dict:
    r = run_measured(
        [lago, "generate", "--dataset", "transacciones", "--rows", str(rows), "--out", str(out),
         "--seed", str(seed), "--json"],
        env=lago_env(),
        what="lago generate",
    )
    report = json.loads(r["stdout"])
    report["seconds"] = r["seconds"]
    return report


def warm(path: Path) -> None:
    """Reads the file once so that every tool starts with it in the page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def run_lago(lago: str, src: Path, work: Path, threads: int, expect_rows: int | None) -> dict:
    """`lago transform` of `src` into a scratch lake: time, CPU, peak RSS and the manifest's
    figures. With `expect_rows`, a manifest that is not `ok` with that many rows is an error."""
    lake = work / f"lake-t{threads}"
    shutil.rmtree(lake, ignore_errors=True)
    try:
        r = run_measured(
            [lago, "transform", "--input", str(src), "--lake", str(lake), "--dataset", "transacciones",
             "--load-date", LOAD_DATE, "--threads", str(threads), "--json"],
            env=lago_env(),
            what=f"lago transform --threads {threads}",
        )
        m = json.loads(r["stdout"])
    finally:
        shutil.rmtree(lake, ignore_errors=True)
    if expect_rows is not None and (m.get("status") != "ok" or m.get("rows_in") != expect_rows):
        raise BenchError(
            f"lago transform --threads {threads}: unexpected manifest (status {m.get('status')}, "
            f"rows_in {m.get('rows_in')}, expected {expect_rows})\n{json.dumps(m, indent=2)[:3000]}"
        )
    return {
        "seconds": r["seconds"],
        "process_seconds": r["seconds"],
        "cpu_seconds": r["cpu_seconds"],
        "rss_kib": r["rss_kib"],
        "rows": m["rows_in"],
        "rows_ok": m["rows_ok"],
        "output_bytes": sum(o["bytes"] for o in m["outputs"]["processed"]),
        "parts": len(m["outputs"]["processed"]),
        "threads_used": m["threads"],
        "stages_ms": m.get("stages", {}),
    }


def run_python_tool(tool: str, src: Path, work: Path, threads: int, expect_rows: int) -> dict:
    dst = work / f"{tool}-t{threads}.parquet"
    dst.unlink(missing_ok=True)
    try:
        r = run_measured(
            [sys.executable, os.path.abspath(__file__), "--worker", tool,
             "--threads", str(threads), "--input", str(src), "--output", str(dst)],
            what=f"{tool} ({threads} thread(s))",
        )
        w = json.loads(r["stdout"])
        out_bytes = dst.stat().st_size
    finally:
        dst.unlink(missing_ok=True)
    if w["rows"] is not None and w["rows"] != expect_rows:
        raise BenchError(f"{tool}: wrote {w['rows']} rows, expected {expect_rows}")
    return {
        "seconds": w["seconds"],
        "process_seconds": r["seconds"],
        "cpu_seconds": r["cpu_seconds"],
        "rss_kib": r["rss_kib"],
        "rows": w["rows"] if w["rows"] is not None else expect_rows,
        "output_bytes": out_bytes,
        "schema": w["schema"],
        "threads_used": w["threads_used"],
        "version": w["version"],
    }


def best_of(runs: int, label: str, fn) -> dict:
    results = []
    for i in range(runs):
        r = fn()
        results.append(r)
        print(f"  {label:<28} run {i + 1}/{runs}: {r['seconds']:8.3f} s  {r['rss_kib'] / 1024:8.1f} MiB",
              flush=True)
    best = dict(min(results, key=lambda r: r["seconds"]))
    best["rss_kib"] = max(r["rss_kib"] for r in results)
    best["all_seconds"] = [r["seconds"] for r in results]
    best["all_rss_kib"] = [r["rss_kib"] for r in results]
    return best


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def fmt_rows(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"


def table_rows(results: list[dict], input_bytes: int) -> list[list[str]]:
    out = []
    for r in results:
        s = r["seconds"]
        out.append([
            r["tool"],
            str(r["threads"]),
            f"{s:.3f}",
            f"{input_bytes / MB / s:.1f}",
            fmt_rows(r["rows"] / s),
            f"{r['rss_kib'] / 1024:.1f}",
        ])
    return out


def render_text(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def render_md(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(
        description="Benchmark lago transform against DuckDB and pyarrow (CSV -> Parquet).",
        epilog="LAGO_BIN must point to a release build of lago.",
    )
    ap.add_argument("--size-mb", type=float, default=200, help="input size for the comparison (MB, default 200)")
    ap.add_argument("--big-size-mb", type=float, default=1000,
                    help="second input size for lago's memory check (MB, default 1000; 0 to skip)")
    ap.add_argument("--out", type=Path, default=Path("bench-out"), help="results and work folder (default bench-out)")
    ap.add_argument("--runs", type=int, default=3, help="runs per configuration (best time, max RSS; default 3)")
    ap.add_argument("--threads", type=int, default=0, help="'all threads' count (default: usable cores)")
    ap.add_argument("--rss-threads", default="4,6",
                    help="more thread counts at which to show lago's peak RSS on the same file "
                         "(a Lambda has up to 6 vCPUs; beyond this machine's cores only memory "
                         "is meaningful; default 4,6; empty for none)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--keep", action="store_true", help="keep the generated CSV files")
    args = ap.parse_args()

    lago = os.environ.get("LAGO_BIN")
    if not lago:
        print("error: set LAGO_BIN to a release build of lago "
              "(e.g. LAGO_BIN=$HOME/.cache/lago/target/release/lago)", file=sys.stderr)
        return 2
    if not (os.path.isfile(lago) and os.access(lago, os.X_OK)):
        print(f"error: LAGO_BIN={lago!r} is not an executable file", file=sys.stderr)
        return 2
    if "/debug/" in os.path.realpath(lago):
        print(f"warning: LAGO_BIN={lago} looks like a debug build; numbers will not be representative",
              file=sys.stderr)
    for mod in ("duckdb", "pyarrow"):
        try:
            __import__(mod)
        except ImportError:
            print(f"error: {mod} is not importable by {sys.executable}; "
                  "pip install --require-hashes --no-deps -r tests/requirements.txt", file=sys.stderr)
            return 2
    if args.runs < 1 or args.size_mb <= 0:
        print("error: --runs must be >= 1 and --size-mb > 0", file=sys.stderr)
        return 2

    nproc = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    out = args.out.resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    generated: list[Path] = []
    try:
        version = run_measured([lago, "--version"], what="lago --version")["stdout"].strip()
        load_before = os.getloadavg()[0]
        if load_before > 0.5:
            print(f"warning: load average is {load_before:.2f} before starting: other processes compete "
                  "for the cores and the numbers (multi-threaded ones above all) will be noisy", file=sys.stderr)
        print(f"{version} ({lago}); {nproc} thread(s) as 'all'; {args.runs} run(s) each; results in {out}")

        # Pilot: bytes per row.
        pilot = work / "pilot.csv"
        generated.append(pilot)
        rep = generate(lago, PILOT_ROWS, pilot, args.seed)
        bytes_per_row = rep["bytes"] / rep["rows"]
        pilot.unlink(missing_ok=True)

        def make_input(size_mb: float, name: str) -> tuple[Path, dict]:
            rows = max(1, round(size_mb * MB / bytes_per_row))
            path = work / name
            generated.append(path)
            print(f"generating {name}: {rows:,} rows (~{size_mb:g} MB at {bytes_per_row:.1f} B/row) …", flush=True)
            rep = generate(lago, rows, path, args.seed)
            if rep["clean"] != rep["rows"]:
                raise BenchError(f"the generated file has dirty rows: {rep}")
            print(f"  {rep['bytes'] / MB:.1f} MB in {rep['seconds']:.2f} s", flush=True)
            return path, rep

        src, src_rep = make_input(args.size_mb, "transacciones.csv")
        input_bytes = src_rep["bytes"]
        rows = src_rep["rows"]
        warm(src)

        thread_counts = [1] if nproc == 1 else [1, nproc]
        results: list[dict] = []
        for threads in thread_counts:
            r = best_of(args.runs, f"lago --threads {threads}",
                        lambda: run_lago(lago, src, work, threads, rows))
            results.append({"tool": "lago", "threads": threads, **r})
        for tool in ("duckdb", "pyarrow"):
            for threads in thread_counts:
                r = best_of(args.runs, f"{tool} threads={threads}",
                            lambda: run_python_tool(tool, src, work, threads, rows))
                results.append({"tool": tool, "threads": threads, **r})

        headers = ["tool", "threads", "seconds", "MB/s", "rows/s", "peak RSS MiB"]
        trows = table_rows(results, input_bytes)
        print()
        print(f"input: {input_bytes / MB:.1f} MB, {rows:,} rows (transacciones CSV, clean)")
        print(render_text(headers, trows))

        # Ratios at equal thread counts.
        by = {(r["tool"], r["threads"]): r for r in results}
        ratios = []
        for threads in thread_counts:
            lg = by[("lago", threads)]
            for other in ("duckdb", "pyarrow"):
                o = by[(other, threads)]
                ratios.append({
                    "threads": threads,
                    "vs": other,
                    "speed": o["seconds"] / lg["seconds"],
                    "rss": lg["rss_kib"] / o["rss_kib"],
                })
        rhead = ["threads", "lago vs", "speed (lago ÷ other, >1 = lago faster)", "peak RSS (lago ÷ other)"]
        rrows = [[str(r["threads"]), r["vs"], f"{r['speed']:.2f}×", f"{r['rss']:.2f}×"] for r in ratios]
        print()
        print(render_text(rhead, rrows))

        # Where lago's time went, from its manifests (wall clock per stage; with several threads
        # the stages overlap, validation is summed over the workers and waits for a core count).
        stage_names = ["read", "validate", "keys", "parquet", "rejects"]
        shead = ["threads", "wall s"] + [f"{n} s" for n in stage_names]
        srows = []
        for threads in thread_counts:
            lg = by[("lago", threads)]
            st = lg.get("stages_ms") or {}
            srows.append([str(threads), f"{lg['seconds']:.3f}"]
                         + [f"{st.get(n + '_ms', 0) / 1000:.3f}" for n in stage_names])
        print()
        print("lago's time by stage (from its manifests; with several threads the stages overlap):")
        print(render_text(shead, srows))
        budget = []
        for threads in thread_counts:
            if ("pyarrow", threads) not in by:
                continue
            need = by[("pyarrow", threads)]["seconds"] / 2
            parquet_s = (by[("lago", threads)].get("stages_ms") or {}).get("parquet_ms", 0) / 1000
            budget.append({"threads": threads, "seconds_for_2x_pyarrow": need,
                           "lago_parquet_seconds": parquet_s})
            print(f"{threads} thread(s): 2× pyarrow means the whole run in ≤ {need:.3f} s; "
                  f"lago's Parquet encoding alone took {parquet_s:.3f} s")

        # Memory versus input size.
        mem = [{
            "input_mb": input_bytes / MB,
            "rows": rows,
            "seconds": by[("lago", nproc)]["seconds"] if ("lago", nproc) in by else by[("lago", 1)]["seconds"],
            "rss_kib": by[("lago", nproc)]["rss_kib"] if ("lago", nproc) in by else by[("lago", 1)]["rss_kib"],
        }]
        if args.big_size_mb and args.big_size_mb > 0:
            big, big_rep = make_input(args.big_size_mb, "transacciones-big.csv")
            warm(big)
            r = best_of(args.runs, f"lago --threads {nproc} (big)",
                        lambda: run_lago(lago, big, work, nproc, big_rep["rows"]))
            mem.append({"input_mb": big_rep["bytes"] / MB, "rows": big_rep["rows"],
                        "seconds": r["seconds"], "rss_kib": r["rss_kib"]})
            if not args.keep:
                big.unlink(missing_ok=True)
        mhead = ["input MB", "rows", "seconds", "MB/s", "lago peak RSS MiB"]
        mrows = [[f"{m['input_mb']:.0f}", f"{m['rows']:,}", f"{m['seconds']:.3f}",
                  f"{m['input_mb'] / m['seconds']:.1f}", f"{m['rss_kib'] / 1024:.1f}"] for m in mem]
        print()
        print(f"lago peak RSS by input size ({nproc} threads):")
        print(render_text(mhead, mrows))
        if len(mem) == 2:
            growth = mem[1]["rss_kib"] / mem[0]["rss_kib"]
            size_growth = mem[1]["input_mb"] / mem[0]["input_mb"]
            print(f"input ×{size_growth:.1f} → peak RSS ×{growth:.2f}")

        # Memory versus thread count, on the same file.
        by_threads = [{"threads": t, "seconds": by[("lago", t)]["seconds"], "rss_kib": by[("lago", t)]["rss_kib"]}
                      for t in thread_counts if ("lago", t) in by]
        for t in [int(x) for x in args.rss_threads.split(",") if x.strip()]:
            if any(b["threads"] == t for b in by_threads):
                continue
            r = best_of(args.runs, f"lago --threads {t}", lambda t=t: run_lago(lago, src, work, t, rows))
            by_threads.append({"threads": t, "seconds": r["seconds"], "rss_kib": r["rss_kib"]})
        by_threads.sort(key=lambda b: b["threads"])
        thead = ["threads", "seconds", "lago peak RSS MiB"]
        trows_rss = [[str(b["threads"]), f"{b['seconds']:.3f}", f"{b['rss_kib'] / 1024:.1f}"] for b in by_threads]
        print()
        print(f"lago peak RSS by thread count ({input_bytes / MB:.0f} MB; past {nproc} threads "
              "the seconds are not a speed figure):")
        print(render_text(thead, trows_rss))

        info = machine_info()
        schemas = {r["tool"]: r["schema"] for r in results if "schema" in r}
        versions = {"lago": version}
        versions.update({r["tool"]: r["version"] for r in results if "version" in r})
        doc = {
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": info,
            "versions": versions,
            "runs": args.runs,
            "load_average": {"before": load_before, "after": os.getloadavg()[0]},
            "all_threads": nproc,
            "input": {"bytes": input_bytes, "mb": input_bytes / MB, "rows": rows,
                      "bytes_per_row": input_bytes / rows, "dataset": "transacciones", "seed": args.seed},
            "results": [
                {k: v for k, v in r.items() if k not in ("stdout", "stderr")}
                | {"mb_per_s": input_bytes / MB / r["seconds"], "rows_per_s": r["rows"] / r["seconds"],
                   "rss_mib": r["rss_kib"] / 1024}
                for r in results
            ],
            "ratios": ratios,
            "budget_for_2x_pyarrow": budget,
            "memory_by_size": [m | {"rss_mib": m["rss_kib"] / 1024} for m in mem],
            "memory_by_threads": [b | {"rss_mib": b["rss_kib"] / 1024} for b in by_threads],
            "inferred_schemas": schemas,
        }
        (out / "bench.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

        md = [
            f"CSV → Parquet (Snappy), `transacciones`, {input_bytes / MB:.0f} MB / {rows:,} rows; "
            f"{info['cpu'] or 'unknown CPU'}, {info['usable_cores']} cores, {info['memory_gib']} GiB RAM; "
            f"best of {args.runs} run(s), peak RSS = max over the runs.",
            "",
            render_md(headers, trows),
            "",
            render_md(rhead, rrows),
            "",
            "lago's time by stage (from its manifests; with several threads the stages overlap):",
            "",
            render_md(shead, srows),
            "",
            *[f"- {b['threads']} thread(s): 2× pyarrow means the whole run in ≤ "
              f"{b['seconds_for_2x_pyarrow']:.3f} s; lago's Parquet encoding alone took "
              f"{b['lago_parquet_seconds']:.3f} s." for b in budget],
            "",
            f"lago peak RSS by input size ({nproc} threads):",
            "",
            render_md(mhead, mrows),
            "",
            f"lago peak RSS by thread count ({input_bytes / MB:.0f} MB; past {nproc} threads the "
            "seconds are not a speed figure):",
            "",
            render_md(thead, trows_rss),
            "",
            f"Versions: {version}, DuckDB {versions.get('duckdb', '?')}, pyarrow {versions.get('pyarrow', '?')}, "
            f"Python {info['python']}. DuckDB and pyarrow read every column of this file as text; lago "
            "validates, types and normalises each record (see scripts/bench.py).",
            "",
        ]
        (out / "bench.md").write_text("\n".join(md), encoding="utf-8")
        print(f"\nwrote {out / 'bench.json'} and {out / 'bench.md'}")
        return 0
    except BenchError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            for p in generated:
                p.unlink(missing_ok=True)
            for p in work.glob("lake-*"):
                shutil.rmtree(p, ignore_errors=True)
            for p in work.glob("*.parquet"):
                p.unlink(missing_ok=True)
            try:
                work.rmdir()
            except OSError:
                pass


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(worker(sys.argv[2:]))
    sys.exit(main())
