"""Interoperability tests: what `lago transform` writes, read back by readers we did not write.

Every processed file is opened with pyarrow and with DuckDB, and every expectation is computed
independently in Python (the `csv` module, `decimal.Decimal`, `hashlib`), never by asking lago.

Run (the lago binary comes from ``LAGO_BIN``; a debug build is fine, the file runs in seconds):

    python3 -m venv .venv && .venv/bin/pip install --require-hashes --no-deps -r tests/requirements.txt
    cargo build -p lago-cli
    LAGO_BIN=target/debug/lago .venv/bin/pytest -q tests/python/test_interop.py
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import hashlib
import json
import os
import re
import subprocess
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

SALT = "interop-salt-2025"
LOAD_DATE = "2025-05-10"
PARTITION = "year=2025/month=05/day=10"
UTC = dt.timezone.utc
CENT = Decimal("0.01")


# --------------------------------------------------------------------------------------------
# Running lago
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lago_bin() -> str:
    path = os.environ.get("LAGO_BIN")
    if not path:
        pytest.fail(
            "LAGO_BIN is not set: point it to a built lago binary, e.g. "
            "LAGO_BIN=$CARGO_TARGET_DIR/debug/lago pytest tests/python",
            pytrace=False,
        )
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"LAGO_BIN={path!r} is not an executable file", pytrace=False)
    return path


def run_lago(lago_bin: str, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("LAGO_PII_SALT_FILE", None)  # it would take precedence over LAGO_PII_SALT
    env["LAGO_PII_SALT"] = SALT
    env["LAGO_LOG"] = "warn"
    cmd = [lago_bin, *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == expect, (
        f"`{' '.join(cmd)}` exited {p.returncode}, expected {expect}\n"
        f"stdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}"
    )
    return p


def transform(lago_bin: str, src: Path, lake: Path, *extra: str, expect: int = 0) -> dict:
    """Runs `lago transform --json`, returns the manifest and checks it matches the one on disk."""
    p = run_lago(lago_bin, "transform", "--input", src, "--lake", lake, "--json", *extra, expect=expect)
    manifest = json.loads(p.stdout)
    on_disk = json.loads((lake / manifest["outputs"]["manifest"]).read_text(encoding="utf-8"))
    assert on_disk == manifest, "the manifest printed differs from the manifest written"
    return manifest


def generate(lago_bin: str, out: Path, rows: int, *extra: str) -> dict:
    p = run_lago(
        lago_bin, "generate", "--dataset", "transacciones", "--rows", str(rows), "--out", out, "--json", *extra
    )
    return json.loads(p.stdout)


def lake_files(lake: Path) -> list[str]:
    """Every file under the lake (hidden temporaries included), relative, sorted."""
    return sorted(str(p.relative_to(lake)) for p in lake.rglob("*") if p.is_file())


def read_parts(lake: Path, manifest: dict) -> pa.Table:
    tables = [pq.read_table(lake / o["key"]) for o in manifest["outputs"]["processed"]]
    assert tables, "no processed parts"
    return pa.concat_tables(tables)


def read_rejected(lake: Path, manifest: dict) -> list[dict]:
    rej = manifest["outputs"]["rejected"]
    if rej is None:
        return []
    out = []
    for n, text in enumerate((lake / rej["key"]).read_text(encoding="utf-8").splitlines(), 1):
        try:
            out.append(json.loads(text))
        except json.JSONDecodeError as e:  # pragma: no cover - the assertion message matters
            pytest.fail(f"rejected NDJSON line {n} is not JSON ({e}): {text[:200]!r}")
    return out


def place_raw(root: Path, dataset: str, name: str, data: bytes) -> Path:
    """Writes a raw file where the bucket would hold it: raw/<dataset>/year=/month=/day=/<name>."""
    path = root / "lake" / "raw" / dataset / PARTITION / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def raw_key(dataset: str, name: str) -> str:
    return f"raw/{dataset}/{PARTITION}/{name}"


def expected_schema(fields: list[tuple[str, pa.DataType, bool]]) -> pa.Schema:
    lineage = [
        ("_source_key", pa.string(), False),
        ("_source_line", pa.int64(), False),
        ("_load_date", pa.date32(), False),
    ]
    return pa.schema([pa.field(n, t, nullable=nul) for n, t, nul in fields + lineage])


def assert_schema(table: pa.Table, expected: pa.Schema) -> None:
    got = [(f.name, str(f.type), f.nullable) for f in table.schema]
    want = [(f.name, str(f.type), f.nullable) for f in expected]
    assert got == want


def pii_hash(value: str) -> str:
    return hashlib.sha256(SALT.encode("utf-8") + value.encode("utf-8")).hexdigest()


def assert_part_names(manifest: dict, dataset: str, stem: str) -> None:
    pat = re.compile(rf"processed/{dataset}/{PARTITION}/{re.escape(stem)}-([0-9a-f]{{8}})-(\d{{5}})\.parquet")
    tags = set()
    for i, o in enumerate(manifest["outputs"]["processed"]):
        m = pat.fullmatch(o["key"])
        assert m, f"unexpected processed key {o['key']!r}"
        assert int(m.group(2)) == i, "parts are numbered 00000, 00001, … in order"
        tags.add(m.group(1))
    assert len(tags) == 1
    tag = tags.pop()
    assert manifest["outputs"]["manifest"] == f"manifests/{dataset}/{PARTITION}/{stem}-{tag}.json"
    if manifest["outputs"]["rejected"] is not None:
        assert manifest["outputs"]["rejected"]["key"] == f"rejected/{dataset}/{PARTITION}/{stem}-{tag}.ndjson"


def by_line(table: pa.Table) -> dict[int, dict]:
    return {r["_source_line"]: r for r in table.to_pylist()}


# --------------------------------------------------------------------------------------------
# 1. Hand-written files with known values, one per dataset
# --------------------------------------------------------------------------------------------

TRANSACCIONES_CSV = (
    "id_transaccion,fecha_transaccion,tipo_transaccion,Contraparte,Cantidad kWh,precio_kwh,Tipo Energía,observaciones\n"
    "TX-1,2025-05-10T13:45:00Z,Venta,José Núñez,1.005,1,Eólica,redondeo\n"  # line 2
    'TX-2,2025-05-11,COMPRA,"Hidroeléctrica del Río, S.A.","1,234.5",800.1234,HIDROELÉCTRICA,agrupado\n'  # 3
    'TX-3,10/05/2025,compra,"Planta ""La Ñ""\nNorte",2.675,1,solar,multilínea\n'  # 4-5
    "TX-4,2025-05-12,venta,Ana,abc,1,solar,malo\n"  # 6: invalid number
    "TX-1,2025-05-13,venta,Otro,1,1,solar,duplicado\n"  # 7: duplicate key
    "TX-5,2025-05-12T08:00:00-05:00,venta,  Luis   Pérez  ,0.004,1,térmica,offset\n"  # 8
    "TX-6,,Compra,Geotérmica S.A.S.,3,250.5,GEOTÉRMICA,sin fecha\n"  # 9
)


def test_transacciones_hand_written_values(lago_bin, tmp_path):
    name = "transacciones_mayo.csv"
    src = place_raw(tmp_path, "transacciones", name, TRANSACCIONES_CSV.encode("utf-8"))
    lake = tmp_path / "lake"
    m = transform(lago_bin, src, lake, "--dataset", "transacciones", "--load-date", LOAD_DATE)

    assert m["status"] == "ok"
    assert (m["rows_in"], m["rows_ok"], m["rows_rejected"]) == (7, 5, 2)
    assert m["rejects_by_reason"] == {"invalid_number:cantidad_comprada": 1, "duplicate_key": 1}
    assert m["ignored_columns"] == ["observaciones"]
    assert m["source"]["delimiter"] == "," and m["source"]["decimal_separator"] == "."
    assert m["source"]["encoding"] == "utf-8"
    assert_part_names(m, "transacciones", "transacciones_mayo")

    t = read_parts(lake, m)
    assert_schema(
        t,
        expected_schema(
            [
                ("id_transaccion", pa.string(), True),
                ("fecha_transaccion", pa.timestamp("us", tz="UTC"), True),
                ("tipo_transaccion", pa.string(), False),
                ("nombre_cliente_proveedor", pa.string(), False),
                ("cantidad_comprada", pa.decimal128(18, 3), False),
                ("precio", pa.decimal128(18, 4), False),
                ("tipo_energia", pa.string(), False),
                ("total", pa.decimal128(18, 2), False),
            ]
        ),
    )
    rows = by_line(t)
    assert sorted(rows) == [2, 3, 4, 8, 9], "_source_line is the line where each accepted record starts"
    key = raw_key("transacciones", name)
    expected = {
        2: ("TX-1", dt.datetime(2025, 5, 10, 13, 45, tzinfo=UTC), "venta", "José Núñez",
            "1.005", "1.0000", "eolica", "1.01"),  # 1.005 × 1 = 1.005 → 1.01 (half away from zero)
        3: ("TX-2", dt.datetime(2025, 5, 11, tzinfo=UTC), "compra", "Hidroeléctrica del Río, S.A.",
            "1234.500", "800.1234", "hidroelectrica", "987752.34"),  # 987752.3373
        4: ("TX-3", dt.datetime(2025, 5, 10, tzinfo=UTC), "compra", 'Planta "La Ñ" Norte',
            "2.675", "1.0000", "solar", "2.68"),  # a binary float would give 2.67
        8: ("TX-5", dt.datetime(2025, 5, 12, 13, 0, tzinfo=UTC), "venta", "Luis Pérez",
            "0.004", "1.0000", "termica", "0.00"),
        9: ("TX-6", None, "compra", "Geotérmica S.A.S.", "3.000", "250.5000", "geotermica", "751.50"),
    }
    for line, (id_, fecha, tipo, nombre, cant, precio, energia, total) in expected.items():
        r = rows[line]
        assert r["id_transaccion"] == id_
        assert r["fecha_transaccion"] == fecha, f"line {line}"
        assert r["tipo_transaccion"] == tipo
        assert r["nombre_cliente_proveedor"] == nombre
        assert r["cantidad_comprada"] == Decimal(cant) and isinstance(r["cantidad_comprada"], Decimal)
        assert r["precio"] == Decimal(precio)
        assert r["tipo_energia"] == energia
        assert r["total"] == Decimal(total), f"line {line}: total {r['total']} != {total}"
        assert str(r["total"]) == total, "total carries exactly two decimal places"
        assert r["_source_key"] == key
        assert r["_load_date"] == dt.date(2025, 5, 10)

    rejected = read_rejected(lake, m)
    assert [(r["line"], r["reason"]) for r in rejected] == [
        (6, "invalid_number:cantidad_comprada"),
        (7, "duplicate_key"),
    ]
    assert rejected[0]["record"] == "TX-4,2025-05-12,venta,Ana,abc,1,solar,malo"
    assert rejected[1]["record"] == "TX-1,2025-05-13,venta,Otro,1,1,solar,duplicado"


CLIENTES_CSV = (
    "ID Cliente;Nombre;tipo_cliente;Tipo Identificación;numero_identificacion;Email;Ciudad;Fecha Registro\r\n"
    "C-001;  José   Núñez Peña ;Residencial;cc;1020304050;juan.perez@Dominio.COM;Bogotá;10/05/2025\r\n"  # 2
    "C-002;María Ángela Gómez;INDUSTRIAL;NIT;900.123.456-7;maria@empresa.com.co;Medellín;2025-01-31\r\n"  # 3
    "C-003;Ñoño Ibáñez;comercial;;;;Cúcuta;\r\n"  # 4: optional columns empty
    "C-004;Correo Malo;comercial;CC;123;no-es-correo;Cali;2025-01-01\r\n"  # 5: invalid e-mail
    "C-001;Duplicado;residencial;CC;1;d@x.co;Cali;2025-01-01\r\n"  # 6: duplicate key
    "C-005;Pedro Páez;Comercial;CE;E-77;pp@correo.co;San Andrés;2024/12/24\r\n"  # 7
)


def test_clientes_windows_1252_semicolon_pii(lago_bin, tmp_path):
    name = "clientes_mayo.csv"
    src = place_raw(tmp_path, "clientes", name, CLIENTES_CSV.encode("cp1252"))
    lake = tmp_path / "lake"
    # Dataset and load date both come from raw/clientes/year=2025/month=05/day=10/ in the path.
    m = transform(lago_bin, src, lake)

    assert m["status"] == "ok" and m["dataset"] == "clientes" and m["load_date"] == LOAD_DATE
    assert (m["rows_in"], m["rows_ok"], m["rows_rejected"]) == (6, 4, 2)
    assert m["rejects_by_reason"] == {"invalid_email": 1, "duplicate_key": 1}
    assert m["source"]["encoding"] == "windows-1252"
    assert m["source"]["delimiter"] == ";"
    assert_part_names(m, "clientes", "clientes_mayo")

    t = read_parts(lake, m)
    assert_schema(
        t,
        expected_schema(
            [
                ("id_cliente", pa.string(), False),
                ("nombre_cliente", pa.string(), False),
                ("nombre_normalizado", pa.string(), False),
                ("segmento", pa.string(), False),
                ("tipo_identificacion", pa.string(), True),
                ("numero_identificacion_hash", pa.string(), True),
                ("email_masked", pa.string(), True),
                ("ciudad", pa.string(), True),
                ("fecha_registro", pa.date32(), True),
            ]
        ),
    )
    assert "email" not in t.column_names and "numero_identificacion" not in t.column_names
    rows = by_line(t)
    assert sorted(rows) == [2, 3, 4, 7]
    expected = {
        2: ("C-001", "José Núñez Peña", "JOSE NUNEZ PENA", "residencial", "CC", pii_hash("1020304050"),
            "j***@dominio.com", "Bogotá", dt.date(2025, 5, 10)),
        3: ("C-002", "María Ángela Gómez", "MARIA ANGELA GOMEZ", "industrial", "NIT", pii_hash("900.123.456-7"),
            "m***@empresa.com.co", "Medellín", dt.date(2025, 1, 31)),
        4: ("C-003", "Ñoño Ibáñez", "NONO IBANEZ", "comercial", None, None, None, "Cúcuta", None),
        7: ("C-005", "Pedro Páez", "PEDRO PAEZ", "comercial", "CE", pii_hash("E-77"),
            "p***@correo.co", "San Andrés", dt.date(2024, 12, 24)),
    }
    cols = ["id_cliente", "nombre_cliente", "nombre_normalizado", "segmento", "tipo_identificacion",
            "numero_identificacion_hash", "email_masked", "ciudad", "fecha_registro"]
    for line, values in expected.items():
        got = tuple(rows[line][c] for c in cols)
        assert got == values, f"line {line}"
        assert rows[line]["_source_key"] == raw_key("clientes", name)
        assert rows[line]["_load_date"] == dt.date(2025, 5, 10)
    # No clear PII anywhere in the processed values.
    flat = json.dumps(t.to_pylist(), default=str, ensure_ascii=False)
    for secret in ("1020304050", "900.123.456-7", "juan.perez", "maria@", "E-77"):
        assert secret not in flat

    rejected = read_rejected(lake, m)
    assert [(r["line"], r["reason"]) for r in rejected] == [(5, "invalid_email"), (6, "duplicate_key")]
    # The rejected record is the raw line, decoded from Windows-1252.
    assert rejected[1]["record"] == "C-001;Duplicado;residencial;CC;1;d@x.co;Cali;2025-01-01"


def test_statistics_kept_where_they_prune_and_skipped_on_free_text(lago_bin, tmp_path):
    src = place_raw(tmp_path, "clientes", "clientes_stats.csv", CLIENTES_CSV.encode("cp1252"))
    lake = tmp_path / "lake"
    m = transform(lago_bin, src, lake)
    [part] = m["outputs"]["processed"]
    meta = pq.ParquetFile(lake / part["key"]).metadata
    group = meta.row_group(0)
    stats = {group.column(i).path_in_schema: group.column(i).statistics for i in range(group.num_columns)}

    # Keys, enums and dates keep min/max (and null counts), as pyarrow reads them.
    assert stats["id_cliente"].has_min_max
    assert (stats["id_cliente"].min, stats["id_cliente"].max) == ("C-001", "C-005")
    assert (stats["segmento"].min, stats["segmento"].max) == ("comercial", "residencial")
    assert stats["fecha_registro"].has_min_max and stats["fecha_registro"].null_count == 1
    # Free text and hashes carry none: they would never prune a row group.
    for name in ("nombre_cliente", "nombre_normalizado", "numero_identificacion_hash", "email_masked", "ciudad"):
        assert stats[name] is None or not stats[name].has_min_max, name


PROVEEDORES_CSV = (
    "\ufeffNombre;Tipo Energía;id_proveedor;Capacidad MW;Ciudad\r\n"
    "Parque Eólico Jepírachi;Eólica;P-01;19,5;Uribia\r\n"  # 2
    "Hidroituango S.A. E.S.P.;HIDROELÉCTRICA;P-02;2.400,000;Ituango\r\n"  # 3
    "Solar Castilla;solar;;;\r\n"  # 4
    "Térmica Mala;carbón;P-04;10;Cartagena\r\n"  # 5: invalid enum
    "Granja Negativa;Solar;P-05;-1,5;Neiva\r\n"  # 6: out of range
    "Biomasa del Cauca;BIOMASA;P-06;0,125;Popayán\r\n"  # 7
)


def test_proveedores_decimal_comma_bom(lago_bin, tmp_path):
    name = "proveedores_mayo.csv"
    src = place_raw(tmp_path, "proveedores", name, PROVEEDORES_CSV.encode("utf-8"))
    lake = tmp_path / "lake"
    m = transform(lago_bin, src, lake, "--dataset", "proveedores", "--load-date", LOAD_DATE)

    assert m["status"] == "ok"
    assert (m["rows_in"], m["rows_ok"], m["rows_rejected"]) == (6, 4, 2)
    assert m["rejects_by_reason"] == {"invalid_enum:tipo_energia": 1, "out_of_range:capacidad_mw": 1}
    assert m["source"]["bom"] is True
    assert m["source"]["delimiter"] == ";" and m["source"]["decimal_separator"] == ","
    assert_part_names(m, "proveedores", "proveedores_mayo")

    t = read_parts(lake, m)
    assert_schema(
        t,
        expected_schema(
            [
                ("nombre_proveedor", pa.string(), False),
                ("tipo_energia", pa.string(), False),
                ("id_proveedor", pa.string(), True),
                ("capacidad_mw", pa.decimal128(12, 3), True),
                ("ciudad", pa.string(), True),
            ]
        ),
    )
    rows = by_line(t)
    assert sorted(rows) == [2, 3, 4, 7]
    expected = {
        2: ("Parque Eólico Jepírachi", "eolica", "P-01", Decimal("19.500"), "Uribia"),
        3: ("Hidroituango S.A. E.S.P.", "hidroelectrica", "P-02", Decimal("2400.000"), "Ituango"),
        4: ("Solar Castilla", "solar", None, None, None),
        7: ("Biomasa del Cauca", "biomasa", "P-06", Decimal("0.125"), "Popayán"),
    }
    cols = ["nombre_proveedor", "tipo_energia", "id_proveedor", "capacidad_mw", "ciudad"]
    for line, values in expected.items():
        assert tuple(rows[line][c] for c in cols) == values, f"line {line}"
        assert rows[line]["_source_key"] == raw_key("proveedores", name)
        assert rows[line]["_load_date"] == dt.date(2025, 5, 10)
    # The BOM never leaks into the first column's values or name.
    assert t.column_names[0] == "nombre_proveedor"
    assert not any(v.startswith("\ufeff") for v in t.column("nombre_proveedor").to_pylist())
    assert [(r["line"], r["reason"]) for r in read_rejected(lake, m)] == [
        (5, "invalid_enum:tipo_energia"),
        (6, "out_of_range:capacidad_mw"),
    ]


# The portal's export: upper-case header, dates as midnight timestamps (and a hand-edited row's
# other forms); each rate is in force from VIGENCIADESDE to VIGENCIAHASTA, both included.
TRM_CSV = (
    "VALOR,UNIDAD,VIGENCIADESDE,VIGENCIAHASTA\n"
    "4201.10,COP,2025-05-02T00:00:00.000,2025-05-02T00:00:00.000\n"  # 2
    "4210.55,COP,2025-05-03T00:00:00.000,2025-05-05T00:00:00.000\n"  # 3: Saturday to Monday
    "4188,COP,06/05/2025,2025/05/06\n"  # 4
    "4190.00,USD,2025-05-07,2025-05-07\n"  # 5: not the unit
    "4191.00,COP,2025-05-09,2025-05-08\n"  # 6: ends before it starts
    "4192.00,COP,2025-05-05,2025-05-07\n"  # 7: its first day is line 3's last
    "4193.00,COP,2025-05-03,2025-05-03\n"  # 8: line 3's first day again
    '"4,195.50",COP,2025-05-07,2025-05-07\n'  # 9: free again, as 5 and 7 claimed nothing
)


def test_trm_portal_export_intervals(lago_bin, tmp_path):
    name = "trm_mayo.csv"
    src = place_raw(tmp_path, "trm", name, TRM_CSV.encode("utf-8"))
    lake = tmp_path / "lake"
    m = transform(lago_bin, src, lake, "--load-date", LOAD_DATE)

    assert m["status"] == "ok" and m["dataset"] == "trm"
    assert (m["rows_in"], m["rows_ok"], m["rows_rejected"]) == (8, 4, 4)
    assert_part_names(m, "trm", "trm_mayo")

    t = read_parts(lake, m)
    assert_schema(
        t,
        expected_schema(
            [
                ("valor", pa.decimal128(12, 2), False),
                ("unidad", pa.string(), False),
                ("vigenciadesde", pa.date32(), False),
                ("vigenciahasta", pa.date32(), False),
            ]
        ),
    )
    rows = by_line(t)

    def day(d: int) -> dt.date:
        return dt.date(2025, 5, d)

    expected = {
        2: (Decimal("4201.10"), "COP", day(2), day(2)),
        3: (Decimal("4210.55"), "COP", day(3), day(5)),
        4: (Decimal("4188.00"), "COP", day(6), day(6)),
        9: (Decimal("4195.50"), "COP", day(7), day(7)),
    }
    assert sorted(rows) == sorted(expected)
    for line, values in expected.items():
        assert tuple(rows[line][c] for c in ("valor", "unidad", "vigenciadesde", "vigenciahasta")) == values, line
        assert rows[line]["_source_key"] == raw_key("trm", name)
    # The accepted rates tile the days they cover: no day has two rates.
    covered = [
        r["vigenciadesde"] + dt.timedelta(days=i)
        for r in rows.values()
        for i in range((r["vigenciahasta"] - r["vigenciadesde"]).days + 1)
    ]
    assert len(covered) == len(set(covered)) == 6
    assert [(r["line"], r["reason"]) for r in read_rejected(lake, m)] == [
        (5, "invalid_enum:unidad"),
        (6, "invalid_interval"),
        (7, "overlapping_interval"),
        (8, "duplicate_key"),
    ]


# --------------------------------------------------------------------------------------------
# A generated dirty transacciones file, shared by the tests below
# --------------------------------------------------------------------------------------------

DIRTY_ROWS = 50_000


@pytest.fixture(scope="module")
def dirty_file(lago_bin, tmp_path_factory) -> tuple[Path, dict]:
    src = tmp_path_factory.mktemp("gen") / "transacciones_dirty.csv"
    report = generate(lago_bin, src, DIRTY_ROWS, "--dirty", "5", "--seed", "7")
    assert report["rows"] == DIRTY_ROWS
    return src, report


def csv_records(path: Path, encoding: str = "utf-8", delimiter: str = ","):
    """Yields (line where the record starts, fields) for every data record, header = line 1."""
    with open(path, newline="", encoding=encoding, errors="surrogateescape") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader)
        yield 1, header
        prev = reader.line_num
        for rec in reader:
            start = prev + 1
            prev = reader.line_num
            if rec:  # blank lines are not records
                yield start, rec


def python_clean_totals(src: Path, rejected_lines: set[int]) -> dict[int, Decimal]:
    """total = cantidad × precio, half away from zero, for every record lago did not reject."""
    it = csv_records(src)
    _, header = next(it)
    ic, ip = header.index("cantidad_comprada"), header.index("precio")
    out = {}
    for line, rec in it:
        if line in rejected_lines:
            continue
        # A comma file: ',' can only be thousands grouping ("1,234.50" arrives quoted).
        c = Decimal(rec[ic].strip().replace(",", ""))
        p = Decimal(rec[ip].strip().replace(",", ""))
        out[line] = (c * p).quantize(CENT, rounding=ROUND_HALF_UP)
    return out


# --------------------------------------------------------------------------------------------
# 2. DuckDB agrees with the manifest and with Python's own arithmetic
# --------------------------------------------------------------------------------------------


def test_duckdb_count_and_exact_sum_match_python(lago_bin, tmp_path, dirty_file):
    src, report = dirty_file
    lake = tmp_path / "lake"
    m = transform(lago_bin, src, lake, "--dataset", "transacciones", "--load-date", LOAD_DATE)
    rejected_lines = {r["line"] for r in read_rejected(lake, m)}
    assert len(rejected_lines) == m["rows_rejected"], "each rejected record has its own line"
    expected = python_clean_totals(src, rejected_lines)
    assert len(expected) == m["rows_ok"] == report["clean"]
    expected_sum = sum(expected.values(), Decimal(0))

    glob = (lake / "processed" / "transacciones").as_posix() + "/**/*.parquet"
    con = duckdb.connect()
    count, total = con.execute(f"SELECT count(*), sum(total) FROM read_parquet('{glob}')").fetchone()
    assert count == m["rows_ok"]
    assert isinstance(total, Decimal)
    assert total == expected_sum, f"DuckDB sum(total) {total} != Python {expected_sum}"

    # Row by row: the same records, the same totals.
    got = dict(con.execute(f"SELECT _source_line, total FROM read_parquet('{glob}')").fetchall())
    assert got.keys() == expected.keys()
    diffs = [(ln, got[ln], expected[ln]) for ln in expected if got[ln] != expected[ln]]
    assert not diffs, f"{len(diffs)} totals differ, first: {diffs[:5]}"

    types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{glob}')").fetchall()}
    assert types["total"] == "DECIMAL(18,2)"
    assert types["cantidad_comprada"] == "DECIMAL(18,3)"
    assert types["precio"] == "DECIMAL(18,4)"
    assert types["fecha_transaccion"] == "TIMESTAMP WITH TIME ZONE"
    assert types["_load_date"] == "DATE"
    assert types["_source_line"] == "BIGINT"
    assert types["tipo_transaccion"] == "VARCHAR"
    # Enums are canonical, as DuckDB sees them too.
    kinds = {r[0] for r in con.execute(f"SELECT DISTINCT tipo_transaccion FROM read_parquet('{glob}')").fetchall()}
    assert kinds == {"compra", "venta"}
    energias = {r[0] for r in con.execute(f"SELECT DISTINCT tipo_energia FROM read_parquet('{glob}')").fetchall()}
    assert energias <= {"eolica", "hidroelectrica", "nuclear", "solar", "termica", "biomasa", "geotermica"}


# --------------------------------------------------------------------------------------------
# 3. Part splitting
# --------------------------------------------------------------------------------------------


def test_parts_read_as_one_dataset(lago_bin, tmp_path, dirty_file):
    src, _ = dirty_file
    lake = tmp_path / "lake"
    m = transform(
        lago_bin, src, lake, "--dataset", "transacciones", "--load-date", LOAD_DATE, "--part-size-mb", "1"
    )
    parts = m["outputs"]["processed"]
    assert len(parts) >= 2, f"expected several parts with --part-size-mb 1, got {len(parts)}"
    assert_part_names(m, "transacciones", "transacciones_dirty")
    for o in parts:
        meta = pq.ParquetFile(lake / o["key"]).metadata
        assert meta.num_rows == o["rows"] > 0, o["key"]
        assert (lake / o["key"]).stat().st_size == o["bytes"]
    assert sum(o["rows"] for o in parts) == m["rows_ok"]
    # Only the closing part may be well under the target size.
    for o in parts[:-1]:
        assert o["bytes"] >= 512 * 1024, f"{o['key']} is only {o['bytes']} bytes"

    processed = lake / "processed" / "transacciones"
    dataset = pads.dataset(processed, format="parquet", partitioning="hive")
    assert len(dataset.files) == len(parts)
    table = dataset.to_table()
    assert table.num_rows == m["rows_ok"]
    assert table.schema.field("total").type == pa.decimal128(18, 2)
    # Parts hold consecutive runs of the input, in order.
    lines = pa.concat_tables([pq.read_table(lake / o["key"]) for o in parts]).column("_source_line").to_pylist()
    assert lines == sorted(lines) and len(set(lines)) == len(lines)

    glob = processed.as_posix() + "/**/*.parquet"
    con = duckdb.connect()
    n, files = con.execute(
        f"SELECT count(*), count(DISTINCT filename) FROM read_parquet('{glob}', filename=true)"
    ).fetchone()
    assert n == m["rows_ok"] and files == len(parts)
    assert con.execute(f"SELECT sum(total) FROM read_parquet('{glob}')").fetchone()[0] == pc_sum(table)


def pc_sum(table: pa.Table) -> Decimal:
    return sum((v for v in table.column("total").to_pylist()), Decimal(0))


# --------------------------------------------------------------------------------------------
# 4. Idempotence
# --------------------------------------------------------------------------------------------


def test_transform_twice_is_idempotent(lago_bin, tmp_path, dirty_file):
    src, _ = dirty_file
    lake = tmp_path / "lake"
    args = ("--dataset", "transacciones", "--load-date", LOAD_DATE, "--part-size-mb", "1")

    first = transform(lago_bin, src, lake, *args, "--threads", "2")
    files_1 = lake_files(lake)
    tables_1 = {o["key"]: pq.read_table(lake / o["key"]) for o in first["outputs"]["processed"]}
    rejected_1 = (lake / first["outputs"]["rejected"]["key"]).read_bytes()

    second = transform(lago_bin, src, lake, *args, "--threads", "2")
    assert lake_files(lake) == files_1, "a replay must overwrite its outputs, not add files"
    assert second["outputs"] == first["outputs"]
    for key in ("rows_in", "rows_ok", "rows_rejected", "rejects_by_reason"):
        assert second[key] == first[key]
    for key, t in tables_1.items():
        assert pq.read_table(lake / key).equals(t), f"{key} changed on replay"
    assert (lake / second["outputs"]["rejected"]["key"]).read_bytes() == rejected_1

    # The thread count does not change what is written either.
    third = transform(lago_bin, src, lake, *args, "--threads", "1")
    assert lake_files(lake) == files_1
    assert third["outputs"] == first["outputs"]
    for key, t in tables_1.items():
        assert pq.read_table(lake / key).equals(t), f"{key} differs with --threads 1"
    assert not [f for f in files_1 if Path(f).name.startswith(".")], "temporary files left behind"
    assert len([f for f in files_1 if f.startswith("manifests/")]) == 1


# --------------------------------------------------------------------------------------------
# 5. Rejected NDJSON
# --------------------------------------------------------------------------------------------


def test_rejected_ndjson_accounts_for_every_reject(lago_bin, tmp_path, dirty_file):
    src, report = dirty_file
    lake = tmp_path / "lake"
    m = transform(lago_bin, src, lake, "--dataset", "transacciones", "--load-date", LOAD_DATE)
    assert m["rows_in"] == m["rows_ok"] + m["rows_rejected"] == DIRTY_ROWS
    assert m["rows_rejected"] > 0

    rejected = read_rejected(lake, m)
    assert len(rejected) == m["rows_rejected"] == m["outputs"]["rejected"]["rows"]
    for r in rejected:
        assert {"line", "reason", "detail", "record"} <= r.keys(), r
        assert isinstance(r["line"], int) and r["line"] >= 2
        assert isinstance(r["reason"], str) and r["reason"]
        assert isinstance(r["detail"], str) and r["detail"]
        assert isinstance(r["record"], str)
    counts = collections.Counter(r["reason"] for r in rejected)
    assert dict(counts) == m["rejects_by_reason"]
    # The generator's oracle: every dirty row has exactly one known defect.
    assert m["rejects_by_reason"] == report["dirty_by_reason"]
    assert m["rows_ok"] == report["clean"]

    # Each rejected record is the raw text of the record that starts at its line.
    raw = {line: rec for line, rec in csv_records(src)}
    with open(src, newline="", encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    for r in rejected[:500]:
        assert r["line"] in raw, f"rejected line {r['line']} is not where a record starts"
        if r["reason"] != "invalid_encoding" and "\n" not in r["record"]:
            assert r["record"] == lines[r["line"] - 1].rstrip("\r"), r
    # Accepted and rejected lines partition the records.
    processed_lines = set(read_parts(lake, m).column("_source_line").to_pylist())
    rejected_lines = {r["line"] for r in rejected}
    assert not processed_lines & rejected_lines
    assert processed_lines | rejected_lines == set(raw) - {1}
