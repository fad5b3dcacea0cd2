//! Behaviour of the transform on real-world dialects, every reject reason and whole-file
//! failures, run on a temporary local lake.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Decimal128Type, Int64Type, TimestampMicrosecondType};
use arrow_array::RecordBatch;
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use lago::contract::Dataset;
use lago::generate::{generate, GenerateOptions, TextEncoding};
use lago::lake::LocalLake;
use lago::transform::{
    transform, LocalFile, Manifest, SourceIdentity, Status, TransformOptions, TransformRequest,
};

struct Run {
    _dir: tempfile::TempDir,
    lake: PathBuf,
    manifest: Manifest,
}

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 5, 10).unwrap_or_default()
}

fn opts(threads: usize) -> TransformOptions {
    TransformOptions {
        threads,
        pii_salt: b"test-salt".to_vec(),
        ..TransformOptions::default()
    }
}

fn run_bytes(dataset: Dataset, name: &str, bytes: &[u8], o: &TransformOptions) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let lake = dir.path().join("lake");
    let raw = dir.path().join(name);
    fs::write(&raw, bytes)?;
    let manifest = run_file(dataset, &raw, &lake, o)?;
    Ok(Run {
        _dir: dir,
        lake,
        manifest,
    })
}

fn run_file(dataset: Dataset, raw: &Path, lake: &Path, o: &TransformOptions) -> Result<Manifest> {
    run_file_as(dataset, raw, lake, o, SourceIdentity::of_local_file)
}

fn run_file_as(
    dataset: Dataset,
    raw: &Path,
    lake: &Path,
    o: &TransformOptions,
    identity: fn(&Path, &str) -> std::io::Result<SourceIdentity>,
) -> Result<Manifest> {
    let key = format!(
        "raw/{}/year=2025/month=05/day=10/{}",
        dataset.name(),
        raw.file_name().and_then(|n| n.to_str()).unwrap_or("x.csv")
    );
    let req = TransformRequest {
        dataset,
        load_date: date(),
        source: identity(raw, &key)?,
    };
    let m = transform(
        &LocalFile(raw.to_path_buf()),
        &req,
        o,
        &LocalLake::new(lake),
        None,
    )?;
    Ok(m)
}

fn read_rows(run: &Run) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for part in &run.manifest.outputs.processed {
        let f = fs::File::open(run.lake.join(&part.key))?;
        for b in ParquetRecordBatchReaderBuilder::try_new(f)?.build()? {
            out.push(b?);
        }
    }
    Ok(out)
}

fn strings(batches: &[RecordBatch], col: &str) -> Vec<Option<String>> {
    let mut v = Vec::new();
    for b in batches {
        let a = b.column_by_name(col).map(|c| c.as_string::<i32>().clone());
        if let Some(a) = a {
            v.extend(a.iter().map(|s| s.map(str::to_string)));
        }
    }
    v
}

fn decimals(batches: &[RecordBatch], col: &str) -> Vec<Option<i128>> {
    let mut v = Vec::new();
    for b in batches {
        if let Some(c) = b.column_by_name(col) {
            v.extend(c.as_primitive::<Decimal128Type>().iter());
        }
    }
    v
}

fn rejected(run: &Run) -> Result<Vec<serde_json::Value>> {
    let Some(r) = &run.manifest.outputs.rejected else {
        return Ok(Vec::new());
    };
    let text = fs::read_to_string(run.lake.join(&r.key))?;
    text.lines()
        .map(|l| serde_json::from_str(l).context("rejected line is JSON"))
        .collect()
}

fn reasons(run: &Run) -> BTreeMap<String, u64> {
    run.manifest.rejects_by_reason.clone()
}

const TX_HEADER: &str =
    "id_transaccion,fecha_transaccion,tipo_transaccion,nombre_cliente_proveedor,cantidad_comprada,precio,tipo_energia\n";

#[test]
fn every_row_reject_reason_is_reported_with_its_line_and_record() -> Result<()> {
    // GIVEN one bad row of every kind among good ones
    let mut csv = String::from(TX_HEADER);
    csv.push_str("T1,2025-05-10,compra,Ana,10,200.5,solar\n"); // line 2 ok
    csv.push_str("T2,2025-05-10,,Ana,10,200,solar\n"); // 3 missing_required
    csv.push_str("T3,2025-05-10,venta,Ana,diez,200,solar\n"); // 4 invalid_number
    csv.push_str("T4,2025-05-10,venta,Ana,0,200,solar\n"); // 5 out_of_range (> 0)
    csv.push_str("T5,2025-05-10,venta,Ana,5,-1,solar\n"); // 6 out_of_range (≥ 0)
    csv.push_str("T6,2025-05-10,alquiler,Ana,5,1,solar\n"); // 7 invalid_enum
    csv.push_str("T7,2025-13-45,venta,Ana,5,1,solar\n"); // 8 invalid_date
    csv.push_str("T8,2025-05-10,venta,Ana,5,1\n"); // 9 ragged_row
    csv.push_str("T1,2025-05-11,venta,Luis,1,1,eolica\n"); // 10 duplicate_key
    let mut bytes = csv.into_bytes();
    bytes.extend_from_slice("T9,2025-05-10,venta,Jos\u{e9},5,1,solar\n".as_bytes()); // 11 ok (UTF-8)
    bytes.extend_from_slice(b"T10,2025-05-10,venta,Jo\xffs,5,1,solar\n"); // 12 invalid_encoding
    bytes.extend_from_slice(b"T11,2025-05-10,venta,Ana,5.12345,1,solar\n"); // 13 invalid_number (scale)
                                                                            // WHEN it is transformed
    let run = run_bytes(Dataset::Transacciones, "tx.csv", &bytes, &opts(1))?;
    // THEN each bad row is rejected with its stable code, line and original text
    let m = &run.manifest;
    assert_eq!(m.status, Status::Ok);
    assert_eq!((m.rows_in, m.rows_ok, m.rows_rejected), (12, 2, 10));
    let expected: BTreeMap<String, u64> = [
        ("missing_required:tipo_transaccion", 1),
        ("invalid_number:cantidad_comprada", 2),
        ("out_of_range:cantidad_comprada", 1),
        ("out_of_range:precio", 1),
        ("invalid_enum:tipo_transaccion", 1),
        ("invalid_date:fecha_transaccion", 1),
        ("ragged_row", 1),
        ("duplicate_key", 1),
        ("invalid_encoding", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(reasons(&run), expected);
    let rej = rejected(&run)?;
    let lines: Vec<u64> = rej.iter().filter_map(|r| r["line"].as_u64()).collect();
    assert_eq!(lines, vec![3, 4, 5, 6, 7, 8, 9, 10, 12, 13]);
    assert_eq!(rej[7]["reason"], "duplicate_key");
    assert_eq!(rej[7]["record"], "T1,2025-05-11,venta,Luis,1,1,eolica");
    assert!(rej[1]["detail"].as_str().unwrap_or("").contains("diez"));
    let rows = read_rows(&run)?;
    assert_eq!(
        strings(&rows, "nombre_cliente_proveedor"),
        vec![Some("Ana".into()), Some("José".into())]
    );
    // 10 × 200.5 = 2005.00
    assert_eq!(decimals(&rows, "total"), vec![Some(200_500), Some(500)]);
    Ok(())
}

#[test]
fn clientes_protect_pii_and_reject_bad_emails_and_enums() -> Result<()> {
    let csv = "id_cliente,Nombre,Tipo Cliente,tipo_identificacion,numero_identificacion,email,ciudad,fecha_registro\n\
               C1,  José   Núñez ,Residencial,cc,1020304050,jose.nunez@correo.com.co,Bogotá,10/05/2025\n\
               C2,Ana,comercial,XX,1,ana@x.co,Cali,2025-05-10\n\
               C3,Ana,gobierno,CC,1,ana@x.co,Cali,2025-05-10\n\
               C4,Ana,comercial,CC,1,ana@,Cali,2025-05-10\n\
               C5,Ana,comercial,,,,Cali,\n";
    let run = run_bytes(Dataset::Clientes, "clientes.csv", csv.as_bytes(), &opts(1))?;
    assert_eq!(run.manifest.rows_ok, 2);
    let r = reasons(&run);
    assert_eq!(r.get("invalid_enum:tipo_identificacion"), Some(&1));
    assert_eq!(r.get("invalid_enum:segmento"), Some(&1));
    assert_eq!(r.get("invalid_email"), Some(&1));
    let rows = read_rows(&run)?;
    assert_eq!(
        strings(&rows, "nombre_cliente")[0].as_deref(),
        Some("José Núñez")
    );
    assert_eq!(
        strings(&rows, "nombre_normalizado")[0].as_deref(),
        Some("JOSE NUNEZ")
    );
    assert_eq!(
        strings(&rows, "segmento")[0].as_deref(),
        Some("residencial")
    );
    assert_eq!(
        strings(&rows, "tipo_identificacion")[0].as_deref(),
        Some("CC")
    );
    assert_eq!(
        strings(&rows, "email_masked")[0].as_deref(),
        Some("j***@correo.com.co")
    );
    assert_eq!(
        strings(&rows, "numero_identificacion_hash")[0].as_deref(),
        Some(lago::text::pii_hash(b"test-salt", "1020304050").as_str())
    );
    // Empty optional cells are nulls.
    assert_eq!(strings(&rows, "email_masked")[1], None);
    let schema = rows[0].schema();
    assert!(schema.field_with_name("email").is_err());
    assert!(schema.field_with_name("numero_identificacion").is_err());
    let days: Vec<Option<i32>> = rows[0]
        .column_by_name("fecha_registro")
        .map(|c| c.as_primitive::<Date32Type>().iter().collect())
        .unwrap_or_default();
    assert_eq!(days[0], Some(lago::parse::days_since_epoch(date())));
    Ok(())
}

#[test]
fn excel_windows_1252_semicolon_decimal_comma_with_first_accent_after_one_mib() -> Result<()> {
    // GIVEN a Windows-1252, `;`, decimal-comma, CRLF file whose first accent is past 1 MiB
    let mut bytes = b"nombre_proveedor;tipo_energia;id_proveedor;capacidad_mw;ciudad\r\n".to_vec();
    let mut n = 0;
    while bytes.len() < (1 << 20) + 1000 {
        n += 1;
        bytes.extend_from_slice(format!("Proveedor {n};solar;P{n};1.234,5;Cali\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"Energ\xeda del Caf\xe9;E\xd3LICA;PX;12,25;Medell\xedn\r\n");
    // WHEN transformed with small chunks so the decision happens in a later chunk
    let o = TransformOptions {
        chunk_size: 64 * 1024,
        ..opts(2)
    };
    let run = run_bytes(Dataset::Proveedores, "prov.csv", &bytes, &o)?;
    // THEN nothing is rejected, the accents are decoded, and numbers use the decimal comma
    let m = &run.manifest;
    assert_eq!(m.rows_rejected, 0, "{:?}", m.rejects_by_reason);
    assert_eq!(m.source.encoding.as_deref(), Some("windows-1252"));
    assert_eq!(m.source.delimiter.as_deref(), Some(";"));
    assert_eq!(m.source.decimal_separator.as_deref(), Some(","));
    let rows = read_rows(&run)?;
    let names = strings(&rows, "nombre_proveedor");
    assert_eq!(
        names.last().cloned().flatten().as_deref(),
        Some("Energía del Café")
    );
    assert_eq!(
        strings(&rows, "ciudad")
            .last()
            .cloned()
            .flatten()
            .as_deref(),
        Some("Medellín")
    );
    assert_eq!(
        strings(&rows, "tipo_energia")
            .last()
            .cloned()
            .flatten()
            .as_deref(),
        Some("eolica")
    );
    let mw = decimals(&rows, "capacidad_mw");
    assert_eq!(mw[0], Some(1_234_500));
    assert_eq!(mw.last().copied().flatten(), Some(12_250));
    Ok(())
}

#[test]
fn bom_crlf_quoted_newlines_and_accented_aliases() -> Result<()> {
    let mut bytes = vec![0xef, 0xbb, 0xbf];
    bytes.extend_from_slice(
        "ID Transacción?,Fecha Transaccion,Tipo Transacción,Contraparte,Cantidad kWh,Precio kWh,Tipo Energía,Observaciones\r\n\
         T1,2025-05-10T13:45:00Z,VENTA,\"Hidro \"\"El Peñol\"\",\r\n S.A.\",\"1,234.5\",300,HIDROELÉCTRICA,\"nota, con coma\"\r\n\
         T2,10/05/2025,Compra,Ana,1,2,Eólica,\r\n"
            .as_bytes(),
    );
    let run = run_bytes(Dataset::Transacciones, "bom.csv", &bytes, &opts(1))?;
    let m = &run.manifest;
    assert!(m.source.bom);
    assert_eq!(m.rows_ok, 2, "{:?}", m.rejects_by_reason);
    // `ID Transacción?` does not match a column: it is ignored and listed, like Observaciones.
    assert_eq!(m.ignored_columns, vec!["ID Transacción?", "Observaciones"]);
    assert_eq!(m.missing_optional_columns, vec!["id_transaccion"]);
    let rows = read_rows(&run)?;
    assert_eq!(
        strings(&rows, "nombre_cliente_proveedor")[0].as_deref(),
        Some("Hidro \"El Peñol\", S.A.")
    );
    assert_eq!(
        strings(&rows, "tipo_transaccion"),
        vec![Some("venta".into()), Some("compra".into())]
    );
    assert_eq!(
        strings(&rows, "tipo_energia"),
        vec![Some("hidroelectrica".into()), Some("eolica".into())]
    );
    assert_eq!(decimals(&rows, "cantidad_comprada")[0], Some(1_234_500));
    assert_eq!(decimals(&rows, "total")[0], Some(37_035_000));
    let ts: Vec<Option<i64>> = rows[0]
        .column_by_name("fecha_transaccion")
        .map(|c| {
            c.as_primitive::<TimestampMicrosecondType>()
                .iter()
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ts[0], Some(1_746_884_700_000_000));
    let lines: Vec<Option<i64>> = rows[0]
        .column_by_name("_source_line")
        .map(|c| c.as_primitive::<Int64Type>().iter().collect())
        .unwrap_or_default();
    // The second record starts on line 4: the first spans lines 2–3.
    assert_eq!(lines, vec![Some(2), Some(4)]);
    Ok(())
}

#[test]
fn gzip_is_detected_by_magic_bytes_not_by_name() -> Result<()> {
    let plain = format!("{TX_HEADER}T1,2025-05-10,compra,Ana,10,2,solar\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(plain.as_bytes())?;
    let bytes = gz.finish()?;
    let run = run_bytes(Dataset::Transacciones, "no_extension", &bytes, &opts(1))?;
    assert_eq!(run.manifest.source.compression.as_deref(), Some("gzip"));
    assert_eq!(run.manifest.rows_ok, 1);
    Ok(())
}

#[test]
fn missing_required_columns_reject_the_whole_file_and_keep_its_bytes() -> Result<()> {
    let csv = "id_transaccion,fecha,tipo_transaccion,contraparte,precio\nT1,2025-05-10,compra,Ana,2\nT2,2025-05-10,compra,Ana,2\n";
    let run = run_bytes(Dataset::Transacciones, "bad.csv", csv.as_bytes(), &opts(1))?;
    let m = &run.manifest;
    assert_eq!(m.status, Status::Rejected);
    assert_eq!(m.file_reason.as_deref(), Some("missing_columns"));
    assert!(m
        .file_detail
        .as_deref()
        .unwrap_or("")
        .contains("cantidad_comprada"));
    assert!(m
        .file_detail
        .as_deref()
        .unwrap_or("")
        .contains("tipo_energia"));
    assert_eq!((m.rows_in, m.rows_ok, m.rows_rejected), (2, 0, 2));
    assert!(m.outputs.processed.is_empty());
    let copy = m.outputs.rejected.as_ref().map(|r| run.lake.join(&r.key));
    assert_eq!(
        copy.map(fs::read).transpose()?,
        Some(csv.as_bytes().to_vec())
    );
    assert!(run.lake.join(&m.outputs.manifest).exists());
    Ok(())
}

#[test]
fn empty_and_header_only_files_are_rejected_as_empty() -> Result<()> {
    for body in [&b""[..], b"\r\n\n", TX_HEADER.as_bytes()] {
        let run = run_bytes(Dataset::Transacciones, "empty.csv", body, &opts(1))?;
        assert_eq!(run.manifest.status, Status::Rejected);
        assert_eq!(run.manifest.file_reason.as_deref(), Some("empty_file"));
        assert_eq!(run.manifest.rows_in, 0);
    }
    Ok(())
}

#[test]
fn a_corrupt_gzip_is_rejected_as_unreadable_and_leaves_no_partial_output() -> Result<()> {
    let mut plain = String::from(TX_HEADER);
    for i in 0..50_000 {
        plain.push_str(&format!("T{i},2025-05-10,compra,Ana,10,2,solar\n"));
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(plain.as_bytes())?;
    let mut bytes = gz.finish()?;
    let cut = bytes.len() * 2 / 3;
    bytes.truncate(cut);
    let o = TransformOptions {
        chunk_size: 16 * 1024,
        part_size: 1 << 20,
        ..opts(2)
    };
    let run = run_bytes(Dataset::Transacciones, "cut.csv.gz", &bytes, &o)?;
    assert_eq!(run.manifest.status, Status::Rejected);
    assert_eq!(run.manifest.file_reason.as_deref(), Some("unreadable"));
    assert!(!run.lake.join("processed").exists() || walk(&run.lake.join("processed"))?.is_empty());
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn generated(
    dataset: Dataset,
    rows: u64,
    dirty: f64,
    enc: TextEncoding,
    delim: u8,
) -> Result<(Vec<u8>, lago::generate::GenerateReport)> {
    let mut buf = Vec::new();
    let report = generate(
        &GenerateOptions {
            dataset,
            rows,
            seed: rows ^ 0x5eed,
            dirty_pct: dirty,
            encoding: enc,
            delimiter: delim,
        },
        &mut buf,
    )?;
    Ok((buf, report))
}

#[test]
fn generated_dirty_files_reconcile_at_several_sizes_and_thread_counts() -> Result<()> {
    let cases = [
        (Dataset::Transacciones, 1_000, TextEncoding::Utf8, b','),
        (Dataset::Clientes, 20_000, TextEncoding::Windows1252, b';'),
        (Dataset::Proveedores, 5_000, TextEncoding::Utf8, b'|'),
        (
            Dataset::Transacciones,
            120_000,
            TextEncoding::Windows1252,
            b';',
        ),
    ];
    for (dataset, rows, enc, delim) in cases {
        let (bytes, report) = generated(dataset, rows, 7.0, enc, delim)?;
        for threads in [1, 3] {
            // Small chunks, parts and key memory exercise the parallel, split and spill paths.
            let o = TransformOptions {
                chunk_size: 32 * 1024,
                part_size: 1 << 20,
                key_memory: 2048,
                ..opts(threads)
            };
            let run = run_bytes(dataset, "gen.csv", &bytes, &o)?;
            let m = &run.manifest;
            assert_eq!(m.rows_in, report.rows, "{dataset} {rows} threads={threads}");
            assert_eq!(
                m.rows_ok, report.clean,
                "{dataset} {rows} threads={threads}"
            );
            assert_eq!(
                m.rejects_by_reason, report.dirty_by_reason,
                "{dataset} {rows} threads={threads}"
            );
            assert_eq!(m.rows_in, m.rows_ok + m.rows_rejected);
            let parquet_rows: usize = read_rows(&run)?.iter().map(RecordBatch::num_rows).sum();
            assert_eq!(parquet_rows as u64, m.rows_ok);
            assert_eq!(rejected(&run)?.len() as u64, m.rows_rejected);
        }
    }
    Ok(())
}

#[test]
fn one_thread_and_many_threads_write_the_same_rows_in_the_same_order() -> Result<()> {
    let (bytes, _) = generated(
        Dataset::Transacciones,
        30_000,
        5.0,
        TextEncoding::Utf8,
        b',',
    )?;
    let small = |t| TransformOptions {
        chunk_size: 16 * 1024,
        ..opts(t)
    };
    let a = run_bytes(Dataset::Transacciones, "x.csv", &bytes, &small(1))?;
    let b = run_bytes(Dataset::Transacciones, "x.csv", &bytes, &small(4))?;
    let (ra, rb) = (read_rows(&a)?, read_rows(&b)?);
    let concat = |v: &[RecordBatch]| arrow_select::concat::concat_batches(&v[0].schema(), v);
    assert_eq!(concat(&ra)?, concat(&rb)?);
    assert_eq!(rejected(&a)?, rejected(&b)?);
    Ok(())
}

#[test]
fn a_replay_overwrites_the_same_outputs_and_leaves_no_stale_parts() -> Result<()> {
    let (bytes, _) = generated(
        Dataset::Transacciones,
        40_000,
        2.0,
        TextEncoding::Utf8,
        b',',
    )?;
    let dir = tempfile::tempdir()?;
    let raw = dir.path().join("ventas.csv");
    fs::write(&raw, &bytes)?;
    let lake = dir.path().join("lake");
    let small_parts = TransformOptions {
        part_size: 1 << 20,
        ..opts(2)
    };
    let first = run_file(Dataset::Transacciones, &raw, &lake, &small_parts)?;
    assert!(first.outputs.processed.len() > 1, "expected several parts");
    let files_first = walk(&lake)?;
    let second = run_file(Dataset::Transacciones, &raw, &lake, &small_parts)?;
    assert_eq!(first.outputs, second.outputs);
    assert_eq!(walk(&lake)?, files_first);
    // Replaying with bigger parts removes the parts the first runs wrote and this one did not.
    let third = run_file(Dataset::Transacciones, &raw, &lake, &opts(2))?;
    assert_eq!(third.outputs.processed.len(), 1);
    let parquet: Vec<PathBuf> = walk(&lake)?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert_eq!(parquet.len(), 1);
    assert_eq!(third.rows_ok, first.rows_ok);
    Ok(())
}

/// Every file under `dir`, by path relative to it, with its bytes.
fn contents(dir: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    walk(dir)?
        .into_iter()
        .map(|p| Ok((p.strip_prefix(dir)?.to_path_buf(), fs::read(&p)?)))
        .collect()
}

#[test]
fn a_file_named_after_the_content_it_reads_gets_the_names_of_its_prehashed_identity() -> Result<()>
{
    let (dirty, _) = generated(
        Dataset::Transacciones,
        40_000,
        3.0,
        TextEncoding::Utf8,
        b',',
    )?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&dirty)?;
    let gz = gz.finish()?;
    let cases: [(&str, &[u8]); 4] = [
        ("parts_and_rejects.csv", &dirty),
        ("compressed.csv.gz", &gz),
        (
            "no_amounts.csv",
            b"id_transaccion,tipo_transaccion\nT1,compra\n",
        ),
        (
            "header_only.csv",
            b"id_transaccion,tipo_transaccion,nombre_cliente_proveedor\n",
        ),
    ];
    for (name, bytes) in cases {
        for threads in [1, 3] {
            let dir = tempfile::tempdir()?;
            let raw = dir.path().join(name);
            fs::write(&raw, bytes)?;
            let o = TransformOptions {
                part_size: 1 << 20,
                ..opts(threads)
            };
            let (hashed, by_content) = (dir.path().join("a"), dir.path().join("b"));
            let a = run_file(Dataset::Transacciones, &raw, &hashed, &o)?;
            // What an interrupted run of the same file left under its staged names goes too.
            let key = format!("raw/transacciones/year=2025/month=05/day=10/{name}");
            let staged_tag = SourceIdentity::of_local_file_by_content(&raw, &key)?.tag();
            let partition = by_content.join("processed/transacciones/year=2025/month=05/day=10");
            let leftover = partition.join(format!(
                "_{}-{staged_tag}-00007.parquet",
                lago::lake::output_stem(&key)
            ));
            fs::create_dir_all(&partition)?;
            fs::write(&leftover, b"half a part")?;
            let b = run_file_as(
                Dataset::Transacciones,
                &raw,
                &by_content,
                &o,
                SourceIdentity::of_local_file_by_content,
            )?;
            let case = format!("{name} threads={threads}");
            assert_eq!(a.outputs, b.outputs, "{case}");
            assert_eq!(a.source, b.source, "{case}");
            assert_eq!(
                (a.status, a.rows_in, a.rows_ok, a.rows_rejected),
                (b.status, b.rows_in, b.rows_ok, b.rows_rejected),
                "{case}"
            );
            assert!(!a.source.version.is_empty(), "{case}");
            // The same objects byte for byte but the manifests (their timings differ), and
            // nothing staged left.
            let without_manifests = |dir: &Path| -> Result<BTreeMap<PathBuf, Vec<u8>>> {
                let mut c = contents(dir)?;
                c.retain(|p, _| !p.starts_with("manifests"));
                Ok(c)
            };
            assert_eq!(
                without_manifests(&hashed)?,
                without_manifests(&by_content)?,
                "{case}"
            );
            assert_eq!(
                contents(&hashed)?.keys().collect::<Vec<_>>(),
                contents(&by_content)?.keys().collect::<Vec<_>>(),
                "{case}"
            );
            assert!(!leftover.exists(), "{case}");
        }
    }
    Ok(())
}

#[test]
fn ambiguous_thousands_follow_the_file_convention() -> Result<()> {
    // In a comma-delimited file with a decimal point, `"1,234"` is one thousand two hundred and
    // thirty-four; `1,5` is not a number (it is never read as 15).
    let csv = format!("{TX_HEADER}T1,2025-05-10,compra,Ana,\"1,234\",1.5,solar\nT2,2025-05-10,compra,Ana,\"1,5\",2.25,solar\n");
    let run = run_bytes(Dataset::Transacciones, "amb.csv", csv.as_bytes(), &opts(1))?;
    assert_eq!(run.manifest.source.decimal_separator.as_deref(), Some("."));
    assert_eq!(
        decimals(&read_rows(&run)?, "cantidad_comprada"),
        vec![Some(1_234_000)]
    );
    assert_eq!(
        reasons(&run).get("invalid_number:cantidad_comprada"),
        Some(&1)
    );
    Ok(())
}

/// A local lake that refuses to create any Parquet part after the first `allowed`.
struct FullAfterParts {
    inner: LocalLake,
    allowed: usize,
    created: std::sync::atomic::AtomicUsize,
}

impl lago::lake::LakeStore for FullAfterParts {
    fn create(&self, key: &str) -> Result<Box<dyn lago::lake::ObjectSink>, lago::lake::LakeError> {
        use std::sync::atomic::Ordering;
        if key.ends_with(".parquet") && self.created.fetch_add(1, Ordering::SeqCst) >= self.allowed
        {
            return Err(lago::lake::LakeError::Io {
                key: key.to_string(),
                source: std::io::Error::other("no space left for this part"),
            });
        }
        self.inner.create(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, lago::lake::LakeError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), lago::lake::LakeError> {
        self.inner.delete(key)
    }
}

#[test]
fn a_part_that_cannot_be_written_fails_the_run_with_its_cause_and_leaves_nothing() -> Result<()> {
    let (bytes, _) = generated(
        Dataset::Transacciones,
        120_000,
        2.0,
        TextEncoding::Utf8,
        b',',
    )?;
    // 1 MiB parts: the file needs several, and the second cannot be created.
    let o = |threads| TransformOptions {
        chunk_size: 64 * 1024,
        part_size: 1 << 20,
        row_group_bytes: 1 << 20,
        ..opts(threads)
    };
    let whole = run_bytes(Dataset::Transacciones, "big.csv", &bytes, &o(1))?;
    assert!(whole.manifest.outputs.processed.len() >= 2);
    for threads in [1, 3] {
        let dir = tempfile::tempdir()?;
        let raw = dir.path().join("big.csv");
        fs::write(&raw, &bytes)?;
        let lake_dir = dir.path().join("lake");
        let lake = FullAfterParts {
            inner: LocalLake::new(&lake_dir),
            allowed: 1,
            created: Default::default(),
        };
        let req = TransformRequest {
            dataset: Dataset::Transacciones,
            load_date: date(),
            source: SourceIdentity::of_local_file(&raw, "raw/transacciones/big.csv")?,
        };
        let err = match transform(&LocalFile(raw.clone()), &req, &o(threads), &lake, None) {
            Ok(m) => anyhow::bail!("threads={threads}: expected a failure, got {m:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("no space left for this part"),
            "threads={threads}: the cause is lost: {err}"
        );
        // The first part, complete before the failure, is removed; no manifest is written.
        let left = if lake_dir.exists() {
            walk(&lake_dir)?
        } else {
            Vec::new()
        };
        assert!(left.is_empty(), "threads={threads}: left behind {left:?}");
    }
    Ok(())
}

#[test]
fn the_manifest_says_where_the_time_went() -> Result<()> {
    let (bytes, _) = generated(
        Dataset::Transacciones,
        60_000,
        3.0,
        TextEncoding::Utf8,
        b',',
    )?;
    for threads in [1, 3] {
        let run = run_bytes(Dataset::Transacciones, "t.csv", &bytes, &opts(threads))?;
        let m = &run.manifest;
        let st = m.stages;
        // 60,000 rows take more than a millisecond to validate and to encode.
        assert!(st.validate_ms > 0, "threads={threads}: {st:?}");
        assert!(st.parquet_ms > 0, "threads={threads}: {st:?}");
        if threads == 1 {
            // One after another: the stages fit in the whole.
            let sum = st.read_ms + st.validate_ms + st.keys_ms + st.parquet_ms + st.rejects_ms;
            assert!(sum <= m.duration_ms, "{st:?} > {} ms", m.duration_ms);
        }
        // What is on disk says the same.
        let written: Manifest =
            serde_json::from_slice(&fs::read(run.lake.join(&m.outputs.manifest))?)?;
        assert_eq!(written.stages, st);
    }
    Ok(())
}

// ---- trm: the official exchange rate -------------------------------------------------------

fn days(batches: &[RecordBatch], col: &str) -> Vec<Option<i32>> {
    let mut v = Vec::new();
    for b in batches {
        if let Some(c) = b.column_by_name(col) {
            v.extend(c.as_primitive::<Date32Type>().iter());
        }
    }
    v
}

/// Days since 1970-01-01 of a date in May 2025.
fn may(day: u32) -> Option<i32> {
    let d = NaiveDate::from_ymd_opt(2025, 5, day)?;
    Some(lago::parse::days_since_epoch(d))
}

/// Line and reason of each rejected row.
fn line_reasons(rejected: &[serde_json::Value]) -> Vec<(u64, &str)> {
    rejected
        .iter()
        .filter_map(|r| Some((r["line"].as_u64()?, r["reason"].as_str()?)))
        .collect()
}

fn trm(csv: &str) -> Result<Run> {
    run_bytes(Dataset::Trm, "trm.csv", csv.as_bytes(), &opts(1))
}

#[test]
fn trm_in_the_portal_export_is_read_whole() -> Result<()> {
    // GIVEN the portal's own export: upper-case header, midnight timestamps, decimal point
    let run = trm("VALOR,UNIDAD,VIGENCIADESDE,VIGENCIAHASTA\n\
         4123.45,COP,2025-05-10T00:00:00.000,2025-05-12T00:00:00.000\n\
         4100,COP,2025-05-13T00:00:00.000,2025-05-13T00:00:00.000\n")?;
    // THEN every row is accepted, typed, and read back from Parquet as written
    let m = &run.manifest;
    assert_eq!((m.rows_in, m.rows_ok), (2, 2), "{:?}", m.rejects_by_reason);
    let rows = read_rows(&run)?;
    assert_eq!(decimals(&rows, "valor"), vec![Some(412_345), Some(410_000)]);
    assert_eq!(
        strings(&rows, "unidad"),
        vec![Some("COP".into()), Some("COP".into())]
    );
    assert_eq!(days(&rows, "vigenciadesde"), vec![may(10), may(13)]);
    assert_eq!(days(&rows, "vigenciahasta"), vec![may(12), may(13)]);
    Ok(())
}

#[test]
fn trm_from_excel_bom_semicolons_decimal_comma_and_any_header_case() -> Result<()> {
    // GIVEN a re-saved export: BOM, `;`, thousands and decimal comma, mixed header case and
    // every date form, the unit in lower case
    let mut bytes = lago::dialect::UTF8_BOM.to_vec();
    bytes.extend_from_slice(
        b"Valor;unidad;VigenciaDesde;VIGENCIAHASTA\r\n\
          4.123,45;cop;10/05/2025;12/05/2025\r\n\
          4123,5;COP;2025-05-13;2025-05-13T00:00:00.000\r\n\
          4.099;COP;2025/05/14;14/05/2025\r\n",
    );
    let run = run_bytes(Dataset::Trm, "trm.csv", &bytes, &opts(1))?;
    // THEN the dialect is recognised and every value read in it
    let m = &run.manifest;
    assert!(m.source.bom);
    assert_eq!(m.source.delimiter.as_deref(), Some(";"));
    assert_eq!(m.source.decimal_separator.as_deref(), Some(","));
    assert_eq!(m.rows_ok, 3, "{:?}", m.rejects_by_reason);
    let rows = read_rows(&run)?;
    assert_eq!(
        decimals(&rows, "valor"),
        vec![Some(412_345), Some(412_350), Some(409_900)]
    );
    assert_eq!(strings(&rows, "unidad")[0].as_deref(), Some("COP"));
    assert_eq!(
        days(&rows, "vigenciadesde"),
        vec![may(10), may(13), may(14)]
    );
    Ok(())
}

#[test]
fn trm_with_thousands_grouping_in_a_comma_file() -> Result<()> {
    let run = trm("valor,unidad,vigenciadesde,vigenciahasta\n\
         \"4,123.45\",COP,2025-05-10,2025-05-12\n\
         4123.4,COP,2025-05-13,2025-05-13\n")?;
    assert_eq!(
        run.manifest.rows_ok, 2,
        "{:?}",
        run.manifest.rejects_by_reason
    );
    assert_eq!(run.manifest.source.decimal_separator.as_deref(), Some("."));
    let rows = read_rows(&run)?;
    assert_eq!(decimals(&rows, "valor"), vec![Some(412_345), Some(412_340)]);
    Ok(())
}

#[test]
fn trm_rejects_each_bad_row_with_its_stable_code() -> Result<()> {
    // GIVEN one bad row of every kind the TRM can have, among good ones
    let run = trm("VALOR,UNIDAD,VIGENCIADESDE,VIGENCIAHASTA\n\
         4000,COP,2025-05-01,2025-05-02\n\
         4000,USD,2025-05-03,2025-05-03\n\
         0,COP,2025-05-03,2025-05-03\n\
         -4000,COP,2025-05-03,2025-05-03\n\
         4000,COP,2025-05-05,2025-05-03\n\
         4000,COP,2025-05-02,2025-05-04\n\
         4100,COP,2025-05-01,2025-05-01\n\
         4000,COP,2025-05-03,2025-05-03T13:45:00.000\n\
         ,COP,2025-05-03,2025-05-03\n\
         4000,COP,2025-05-03\n\
         4000.123,COP,2025-05-03,2025-05-03\n\
         4000,COP,2025-05-03,2025-05-04\n")?;
    // THEN each is rejected with its code on its line, and only the two good rows remain
    let m = &run.manifest;
    assert_eq!((m.rows_in, m.rows_ok, m.rows_rejected), (12, 2, 10));
    let rej = rejected(&run)?;
    assert_eq!(
        line_reasons(&rej),
        vec![
            (3, "invalid_enum:unidad"),
            (4, "out_of_range:valor"),
            (5, "out_of_range:valor"),
            (6, "invalid_interval"),
            (7, "overlapping_interval"),
            (8, "duplicate_key"),
            (9, "invalid_date:vigenciahasta"),
            (10, "missing_required:valor"),
            (11, "ragged_row"),
            (12, "invalid_number:valor"),
        ]
    );
    let detail = |i: usize| rej[i]["detail"].as_str().unwrap_or("").to_string();
    assert!(detail(3).contains("2025-05-05"), "{}", detail(3));
    assert!(
        detail(4).contains("2025-05-01..2025-05-02"),
        "{}",
        detail(4)
    );
    let rows = read_rows(&run)?;
    assert_eq!(days(&rows, "vigenciadesde"), vec![may(1), may(3)]);
    Ok(())
}

#[test]
fn trm_intervals_adjacent_touching_nested_and_out_of_order() -> Result<()> {
    // GIVEN Friday's rate (Sat–Mon), then rows that touch it, nest in it, enclose it, and
    // rows out of order that share no day with anything accepted
    let run = trm("valor,unidad,vigenciadesde,vigenciahasta\n\
         4000,COP,2025-05-10,2025-05-12\n\
         4001,COP,2025-05-13,2025-05-13\n\
         4002,COP,2025-05-12,2025-05-12\n\
         4003,COP,2025-05-08,2025-05-10\n\
         4004,COP,2025-05-11,2025-05-11\n\
         4005,COP,2025-05-09,2025-05-14\n\
         4006,COP,2025-05-09,2025-05-09\n\
         4007,COP,2025-05-14,2025-05-14\n\
         4008,COP,2025-05-01,2025-05-08\n")?;
    // THEN adjacent and out-of-order disjoint rows are accepted; a shared day, nesting and
    // enclosing are overlaps; the key of a refused row stays free (line 7 claims the 9th)
    assert_eq!(
        line_reasons(&rejected(&run)?),
        vec![
            (4, "overlapping_interval"),
            (5, "overlapping_interval"),
            (6, "overlapping_interval"),
            (7, "overlapping_interval"),
        ]
    );
    let rows = read_rows(&run)?;
    assert_eq!(
        days(&rows, "vigenciadesde"),
        vec![may(10), may(13), may(9), may(14), may(1)]
    );
    Ok(())
}

#[test]
fn trm_first_row_wins_across_chunks_and_threads() -> Result<()> {
    // GIVEN eight years of two-day rates, then the same shifted by a day (each row overlapping
    // two accepted ones), then the first days again (duplicates), in a file cut into many small
    // chunks processed by several threads, with more keys than the key set keeps in memory
    let mut csv = String::from("valor,unidad,vigenciadesde,vigenciahasta\n");
    let start = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap_or_default();
    let row = |csv: &mut String, d: u64, to: u64| {
        let from = start + chrono::Days::new(d);
        let to = start + chrono::Days::new(to);
        csv.push_str(&format!("4000.50,COP,{from},{to}\n"));
    };
    for d in (0..3_000).step_by(2) {
        row(&mut csv, d, d + 1);
    }
    for d in (1..3_000).step_by(2) {
        row(&mut csv, d, d + 1);
    }
    for d in (0..3_000).step_by(2) {
        row(&mut csv, d, d);
    }
    for threads in [1, 3] {
        let o = TransformOptions {
            chunk_size: 4 * 1024,
            key_memory: 1024,
            ..opts(threads)
        };
        let run = run_bytes(Dataset::Trm, "trm.csv", csv.as_bytes(), &o)?;
        // THEN exactly the first rows are accepted, in input order
        let m = &run.manifest;
        let expected: BTreeMap<String, u64> = [
            ("overlapping_interval".to_string(), 1_500),
            ("duplicate_key".to_string(), 1_500),
        ]
        .into();
        assert_eq!(m.rows_ok, 1_500, "threads={threads}");
        assert_eq!(m.rejects_by_reason, expected, "threads={threads}");
        let firsts = days(&read_rows(&run)?, "vigenciadesde");
        let base = lago::parse::days_since_epoch(start);
        let want: Vec<Option<i32>> = (0..1_500).map(|i| Some(base + 2 * i)).collect();
        assert_eq!(firsts, want, "threads={threads}");
    }
    Ok(())
}

#[test]
fn generated_trm_files_reconcile_exactly() -> Result<()> {
    for (rows, enc, delim, seed) in [
        (760, TextEncoding::Utf8, b',', 1),
        (3_000, TextEncoding::Utf8, b';', 2),
        (3_000, TextEncoding::Windows1252, b'|', 3),
        (5_000, TextEncoding::Utf8, b'\t', 4),
    ] {
        let mut bytes = Vec::new();
        let report = generate(
            &GenerateOptions {
                dataset: Dataset::Trm,
                rows,
                seed,
                dirty_pct: 12.0,
                encoding: enc,
                delimiter: delim,
            },
            &mut bytes,
        )?;
        for reason in ["invalid_interval", "overlapping_interval", "duplicate_key"] {
            assert!(report.dirty_by_reason.contains_key(reason), "{reason}");
        }
        for threads in [1, 3] {
            let o = TransformOptions {
                chunk_size: 16 * 1024,
                key_memory: 1024,
                ..opts(threads)
            };
            let run = run_bytes(Dataset::Trm, "trm.csv", &bytes, &o)?;
            let m = &run.manifest;
            let case = format!("{rows} {enc:?} {} threads={threads}", delim as char);
            assert_eq!(m.rows_in, report.rows, "{case}");
            assert_eq!(m.rows_ok, report.clean, "{case}");
            assert_eq!(m.rejects_by_reason, report.dirty_by_reason, "{case}");
            // The accepted rates tile the calendar: each starts the day after the last ends.
            let rows = read_rows(&run)?;
            let (from, to) = (days(&rows, "vigenciadesde"), days(&rows, "vigenciahasta"));
            assert_eq!(from.len() as u64, m.rows_ok);
            for i in 1..from.len() {
                assert_eq!(from[i], to[i - 1].map(|d| d + 1), "{case} row {i}");
            }
            assert!(decimals(&rows, "valor")
                .iter()
                .all(|v| v.is_some_and(|v| (390_000..=430_000).contains(&v))));
        }
    }
    Ok(())
}

/// The smallest chunks: the transform then reads 64 KiB at a time and cuts each chunk after the
/// last record that ends in what it read.
fn small_chunks(threads: usize) -> TransformOptions {
    TransformOptions {
        chunk_size: 4096,
        ..opts(threads)
    }
}

/// Rows of transactions padded so that the first read of [`small_chunks`] ends `into` bytes
/// into `tail`, then `tail`.
fn cut_inside(tail: &[u8], into: usize) -> Vec<u8> {
    const FIRST_READ: usize = 64 * 1024;
    let mut bytes = TX_HEADER.as_bytes().to_vec();
    let mut i = 0;
    while bytes.len() + 200 < FIRST_READ - into {
        bytes.extend_from_slice(format!("T{i},2025-05-10,compra,Ana,1,2,solar\n").as_bytes());
        i += 1;
    }
    let pad = FIRST_READ - into - bytes.len() - "P,2025-05-10,compra,,1,2,solar\n".len();
    let name = "x".repeat(pad);
    bytes.extend_from_slice(format!("P,2025-05-10,compra,{name},1,2,solar\n").as_bytes());
    assert_eq!(bytes.len(), FIRST_READ - into);
    bytes.extend_from_slice(tail);
    bytes
}

/// Transforms [`cut_inside`]`(tail, into)` on one thread and two, and checks that every line
/// is a row (the header aside) and that `ragged` of them are ragged.
fn ragged_rows_across_a_cut(name: &str, tail: &[u8], into: usize, ragged: u64) -> Result<()> {
    let bytes = cut_inside(tail, into);
    for threads in [1, 2] {
        // WHEN it is transformed
        let run = run_bytes(Dataset::Transacciones, name, &bytes, &small_chunks(threads))?;
        let m = &run.manifest;
        let rows = (bytes.iter().filter(|&&b| b == b'\n').count() - 1) as u64;
        assert_eq!(m.rows_in, rows, "threads={threads}");
        assert_eq!(
            m.rejects_by_reason.get("ragged_row"),
            Some(&ragged),
            "threads={threads}"
        );
    }
    Ok(())
}

#[test]
fn a_quote_after_a_lone_carriage_return_stays_one_field_across_a_chunk_cut() -> Result<()> {
    // GIVEN a record ended by a lone carriage return, then a quoted field holding a line feed
    // after which the first chunk is cut
    let tail = b"TZ,2025-05-10,compra,Ana,1,2,solar\r\"T2\n,2025-05-10,compra,Ana,1,2,solar\"\n";
    // THEN the quoted field is one record, as the CSV parser reads the whole file: one ragged
    // row, not two halves
    ragged_rows_across_a_cut("cr.csv", tail, 40, 1)
}

#[test]
fn a_byte_order_mark_inside_the_file_is_data_where_a_chunk_starts() -> Result<()> {
    // GIVEN a byte-order mark and a quote starting the second chunk: inside a file they are data,
    // so the quote is a literal and the line feed after it ends the record
    let tail = b"\xef\xbb\xbf\"aaaaaaaaaaaaaaa\nb\"\nT2,2025-05-10,compra,Ana,1,2,solar\n";
    // THEN both lines are records (ragged), and the row after them is read as it is
    ragged_rows_across_a_cut("bom.csv", tail, 0, 2)
}

#[test]
fn blank_lines_filling_the_first_chunk_do_not_make_the_header_a_row() -> Result<()> {
    // GIVEN a rate file whose header starts after 64 KiB of blank lines, so the first chunk
    // holds nothing but blank lines
    let header = "valor,unidad,vigenciadesde,vigenciahasta,observaciones\n";
    let mut csv = "\n".repeat(64 * 1024 - 40);
    csv.push_str(header);
    csv.push_str("4123.45,COP,2025-05-10,2025-05-12,ok\n");
    for threads in [1, 2] {
        // WHEN it is transformed
        let run = run_bytes(
            Dataset::Trm,
            "blank.csv",
            csv.as_bytes(),
            &small_chunks(threads),
        )?;
        // THEN the header is the header, read whole, and the one rate is the one row
        let m = &run.manifest;
        assert_eq!((m.rows_in, m.rows_ok), (1, 1), "{:?}", m.rejects_by_reason);
        assert_eq!(m.ignored_columns, vec!["observaciones"]);
    }
    Ok(())
}

#[test]
fn a_quoted_field_open_across_a_read_stays_one_record() -> Result<()> {
    // GIVEN a name in quotes holding line feeds, opened just before the end of the first read
    // and closed far into the next
    let mut tail = b"TQ,2025-05-10,compra,\"Ana\n".to_vec();
    for _ in 0..8_000 {
        tail.extend_from_slice(b"still quoted\n");
    }
    tail.extend_from_slice(b"\",1,2,solar\nTR,2025-05-10,compra,Ana,1,2,solar\n");
    let bytes = cut_inside(&tail, 40);
    let before = bytes.len() - tail.len();
    for threads in [1, 2] {
        // WHEN it is transformed
        let run = run_bytes(
            Dataset::Transacciones,
            "q.csv",
            &bytes,
            &small_chunks(threads),
        )?;
        // THEN the quoted record is one row, and the one after it another
        let m = &run.manifest;
        let rows = bytes[..before].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        assert_eq!(
            m.rows_in, rows,
            "threads={threads} {:?}",
            m.rejects_by_reason
        );
    }
    Ok(())
}

#[test]
fn a_record_longer_than_the_cap_rejects_the_file_whole_as_unreadable() -> Result<()> {
    // GIVEN a good header, one good row, then a line of 3 MiB without a line feed
    let mut body = String::from(TX_HEADER);
    body.push_str("T1,2025-05-10,compra,Ana,10,2,solar\nT2,2025-05-10,compra,");
    body.push_str(&"A".repeat(3 << 20));
    for threads in [1, 2] {
        let o = TransformOptions {
            max_record: 1 << 20,
            chunk_size: 64 * 1024,
            ..opts(threads)
        };
        // WHEN it is transformed with records capped at 1 MiB
        let run = run_bytes(Dataset::Transacciones, "endless.csv", body.as_bytes(), &o)?;
        // THEN the file is rejected whole, saying why, with its bytes kept and no Parquet
        let m = &run.manifest;
        assert_eq!(m.status, Status::Rejected, "{threads} thread(s)");
        assert_eq!(m.file_reason.as_deref(), Some("unreadable"));
        let detail = m.file_detail.as_deref().unwrap_or_default();
        assert!(
            detail.contains("no record boundary within 1 MiB"),
            "{detail}"
        );
        assert!(m.outputs.processed.is_empty());
        assert!(
            !run.lake.join("processed").exists() || walk(&run.lake.join("processed"))?.is_empty()
        );
        let copy = m.outputs.rejected.as_ref().map(|r| run.lake.join(&r.key));
        assert_eq!(
            copy.map(fs::read).transpose()?,
            Some(body.as_bytes().to_vec())
        );
        assert_eq!((m.rows_in, m.rows_ok), (m.rows_rejected, 0));
    }
    Ok(())
}

#[test]
fn a_file_of_nul_bytes_is_rejected_for_its_columns_with_a_detail_that_stays_short() -> Result<()> {
    // GIVEN 3 MiB of NUL bytes, as a file allocated and never written leaves
    let body = vec![0u8; 3 << 20];
    // WHEN it is transformed
    let run = run_bytes(Dataset::Transacciones, "zeros.csv", &body, &opts(2))?;
    // THEN it is rejected whole: no header the contract knows
    let m = &run.manifest;
    assert_eq!(m.status, Status::Rejected);
    assert_eq!(m.file_reason.as_deref(), Some("missing_columns"));
    // AND the detail names the missing columns, and quotes the first 256 characters of the
    // 1 MiB "header" and its length, not all of it
    let detail = m.file_detail.as_deref().unwrap_or_default();
    assert!(
        detail.starts_with("required columns missing: tipo_transaccion"),
        "{detail}"
    );
    assert!(
        detail.ends_with(&format!("… ({} bytes in all))", 1 << 20)),
        "{detail}"
    );
    assert!(detail.len() < 512, "{}", detail.len());
    // AND so does the manifest's list of the columns it ignored
    assert_eq!(m.ignored_columns.len(), 1);
    assert!(
        m.ignored_columns[0].len() < 512,
        "{}",
        m.ignored_columns[0].len()
    );
    let copy = m.outputs.rejected.as_ref().map(|r| run.lake.join(&r.key));
    assert_eq!(copy.map(fs::read).transpose()?, Some(body));
    Ok(())
}
