//! The local twin of the warehouse load, end to end: files transformed by the library into a
//! temporary lake, loaded into DuckDB with the DuckDB rendering of the load plan.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use chrono::NaiveDate;

use lago::contract::Dataset;
use lago::generate::{generate, GenerateOptions};
use lago::lake::LocalLake;
use lago::transform::{
    transform, LocalFile, Manifest, SourceIdentity, Status, TransformOptions, TransformRequest,
};
use lago_warehouse::{
    load_lake, query, Cell, LoadSummary, QueryResult, SkipReason, Warehouse, WarehouseError,
};

/// A temporary lake folder and warehouse file.
struct Lake {
    dir: tempfile::TempDir,
    lake: PathBuf,
    warehouse: PathBuf,
}

impl Lake {
    fn new() -> Result<Lake> {
        let dir = tempfile::tempdir()?;
        let lake = dir.path().join("lake");
        // Named like the schema on purpose: the catalog must not clash with `lago.<table>`.
        let warehouse = dir.path().join("lago.duckdb");
        Ok(Lake {
            dir,
            lake,
            warehouse,
        })
    }

    /// Transforms `bytes` as the raw object `key` (its load date from `year=/month=/day=`).
    fn ingest(&self, dataset: Dataset, key: &str, bytes: &[u8]) -> Result<Manifest> {
        let raw = self.dir.path().join(format!(
            "raw-{}.csv",
            fs::read_dir(self.dir.path())?.count()
        ));
        fs::write(&raw, bytes)?;
        let load_date = lago::lake::date_from_key(key).unwrap_or_else(|| day(10));
        let req = TransformRequest {
            dataset,
            load_date,
            source: SourceIdentity::of_local_file(&raw, key)?,
        };
        let opts = TransformOptions {
            threads: 1,
            pii_salt: b"test-salt".to_vec(),
            ..TransformOptions::default()
        };
        let m = transform(
            &LocalFile(raw),
            &req,
            &opts,
            &LocalLake::new(&self.lake),
            None,
        )?;
        Ok(m)
    }

    fn ingest_generated(&self, dataset: Dataset, rows: u64, seed: u64) -> Result<Manifest> {
        let mut bytes = Vec::new();
        let opts = GenerateOptions {
            seed,
            ..GenerateOptions::new(dataset, rows)
        };
        generate(&opts, &mut bytes)?;
        let key = format!("raw/{dataset}/year=2025/month=05/day=10/{dataset}-{seed}.csv");
        let m = self.ingest(dataset, &key, &bytes)?;
        if m.status != Status::Ok || m.rows_ok != rows {
            bail!("generated {dataset} did not transform cleanly: {m:?}");
        }
        Ok(m)
    }

    fn load(&self) -> Result<LoadSummary> {
        Ok(load_lake(&self.lake, &self.warehouse, &Dataset::ALL)?)
    }

    fn sql(&self, sql: &str) -> Result<QueryResult> {
        Ok(query(&self.warehouse, sql)?)
    }

    /// The rows of `sql`, every cell as printed.
    fn text(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        Ok(self
            .sql(sql)?
            .rows
            .iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect())
    }

    fn count(&self, sql: &str) -> Result<i64> {
        match self.sql(sql)?.rows.first().and_then(|r| r.first()) {
            Some(Cell::Int(n)) => Ok(*n),
            other => bail!("{sql} gave {other:?}"),
        }
    }

    /// Every row of every table, in a stable order.
    fn contents(&self) -> Result<Vec<QueryResult>> {
        Dataset::ALL
            .iter()
            .map(|d| self.sql(&format!("SELECT * FROM lago.{d} ORDER BY ALL")))
            .collect()
    }
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 5, d).unwrap_or_default()
}

fn table_rows(s: &LoadSummary, d: Dataset) -> u64 {
    s.datasets
        .iter()
        .find(|x| x.dataset == d)
        .map_or(0, |x| x.table_rows)
}

#[test]
fn loading_twice_leaves_identical_counts_and_contents() -> Result<()> {
    // GIVEN a lake with generated files of every dataset (two of transacciones)
    let lake = Lake::new()?;
    let mut ok = std::collections::BTreeMap::new();
    for (d, rows, seed) in [
        (Dataset::Clientes, 300, 1),
        (Dataset::Proveedores, 40, 2),
        (Dataset::Transacciones, 1500, 3),
        (Dataset::Transacciones, 700, 4),
        (Dataset::Trm, 300, 5),
    ] {
        let m = lake.ingest_generated(d, rows, seed)?;
        *ok.entry(d).or_insert(0) += m.rows_ok;
    }

    // WHEN it is loaded
    let first = lake.load()?;
    let first_contents = lake.contents()?;
    // THEN every accepted row is in the warehouse
    for d in Dataset::ALL {
        assert_eq!(table_rows(&first, d), ok[&d], "{d}");
    }
    let tx = first
        .datasets
        .iter()
        .find(|x| x.dataset == Dataset::Transacciones);
    assert_eq!(tx.map(|x| (x.files_loaded, x.rows_replaced)), Some((2, 0)));

    // WHEN it is loaded again
    let second = lake.load()?;
    // THEN the counts and every value are the same: each row replaced itself
    for d in Dataset::ALL {
        assert_eq!(table_rows(&second, d), ok[&d], "{d}");
    }
    for x in &second.datasets {
        assert_eq!(x.rows_replaced, x.rows_staged, "{}", x.dataset);
        assert_eq!(x.rows_inserted, x.rows_staged, "{}", x.dataset);
    }
    assert_eq!(lake.contents()?, first_contents);
    Ok(())
}

const CLIENTES_HEADER: &str = "id_cliente,nombre_cliente,segmento,ciudad\n";

#[test]
fn a_changed_client_in_a_newer_file_is_upserted() -> Result<()> {
    // GIVEN C1 and C2 on 10 May, and a file of 11 May where C1 changed name and segment
    let lake = Lake::new()?;
    let older =
        format!("{CLIENTES_HEADER}C1,Ana Pérez,residencial,Bogotá\nC2,Luis Gómez,comercial,Cali\n");
    let newer = format!("{CLIENTES_HEADER}C1,Ana Pérez de Soto,industrial,Medellín\nC3,Eva Ruiz,residencial,Pasto\n");
    lake.ingest(
        Dataset::Clientes,
        "raw/clientes/year=2025/month=05/day=10/clientes.csv",
        older.as_bytes(),
    )?;
    lake.load()?;
    lake.ingest(
        Dataset::Clientes,
        "raw/clientes/year=2025/month=05/day=11/clientes.csv",
        newer.as_bytes(),
    )?;

    // WHEN the lake is loaded again
    lake.load()?;

    // THEN C1 is one row with the newer values, and the other clients are there once
    let text = lake.text(
        "SELECT id_cliente, nombre_cliente, nombre_normalizado, segmento, ciudad, CAST(_load_date AS VARCHAR) AS d FROM clientes ORDER BY id_cliente",
    )?;
    assert_eq!(
        text,
        vec![
            vec![
                "C1",
                "Ana Pérez de Soto",
                "ANA PEREZ DE SOTO",
                "industrial",
                "Medellín",
                "2025-05-11"
            ],
            vec![
                "C2",
                "Luis Gómez",
                "LUIS GOMEZ",
                "comercial",
                "Cali",
                "2025-05-10"
            ],
            vec![
                "C3",
                "Eva Ruiz",
                "EVA RUIZ",
                "residencial",
                "Pasto",
                "2025-05-11"
            ],
        ]
    );
    Ok(())
}

#[test]
fn an_older_file_loaded_after_a_newer_one_does_not_win() -> Result<()> {
    // GIVEN the 11 May file of a client loaded first
    let lake = Lake::new()?;
    lake.ingest(
        Dataset::Clientes,
        "raw/clientes/year=2025/month=05/day=11/b.csv",
        format!("{CLIENTES_HEADER}C1,Nuevo Nombre,industrial,\n").as_bytes(),
    )?;
    lake.load()?;
    // WHEN the 10 May file arrives late and is loaded
    lake.ingest(
        Dataset::Clientes,
        "raw/clientes/year=2025/month=05/day=10/a.csv",
        format!("{CLIENTES_HEADER}C1,Viejo Nombre,residencial,\n").as_bytes(),
    )?;
    lake.load()?;
    // THEN the row with the later load date stays
    assert_eq!(lake.count("SELECT count(*) FROM clientes")?, 1);
    let r = lake.sql("SELECT nombre_cliente FROM clientes")?;
    assert_eq!(r.rows, vec![vec![Cell::Text("Nuevo Nombre".into())]]);
    Ok(())
}

const TRM_HEADER: &str = "VALOR,UNIDAD,VIGENCIADESDE,VIGENCIAHASTA\n";

#[test]
fn a_corrected_trm_rate_in_a_newer_file_replaces_the_published_one() -> Result<()> {
    // GIVEN the rates of 2 to 5 May loaded from the 10 May export
    let lake = Lake::new()?;
    lake.ingest(
        Dataset::Trm,
        "raw/trm/year=2025/month=05/day=10/trm.csv",
        format!(
            "{TRM_HEADER}4201.10,COP,2025-05-02,2025-05-02\n4210.55,COP,2025-05-03,2025-05-05\n"
        )
        .as_bytes(),
    )?;
    lake.load()?;
    // WHEN the 11 May export republishes 3 May's rate corrected, and adds 6 May's
    lake.ingest(
        Dataset::Trm,
        "raw/trm/year=2025/month=05/day=11/trm.csv",
        format!("{TRM_HEADER}4209.99,COP,2025-05-03T00:00:00.000,2025-05-05T00:00:00.000\n4188.00,COP,06/05/2025,06/05/2025\n")
            .as_bytes(),
    )?;
    let s = lake.load()?;

    // THEN there is one rate per first day, the corrected one from the newer file
    assert_eq!(table_rows(&s, Dataset::Trm), 3);
    let text = lake.text(
        "SELECT CAST(vigenciadesde AS VARCHAR), CAST(vigenciahasta AS VARCHAR), valor, unidad, CAST(_load_date AS VARCHAR) FROM trm ORDER BY 1",
    )?;
    assert_eq!(
        text,
        vec![
            vec!["2025-05-02", "2025-05-02", "4201.10", "COP", "2025-05-10"],
            vec!["2025-05-03", "2025-05-05", "4209.99", "COP", "2025-05-11"],
            vec!["2025-05-06", "2025-05-06", "4188.00", "COP", "2025-05-11"],
        ]
    );
    Ok(())
}

const TX_HEADER: &str =
    "id_transaccion,fecha_transaccion,tipo_transaccion,nombre_cliente_proveedor,cantidad_comprada,precio,tipo_energia\n";

#[test]
fn a_reloaded_transacciones_file_does_not_duplicate() -> Result<()> {
    // GIVEN two transaction files loaded once
    let lake = Lake::new()?;
    let a_key = "raw/transacciones/year=2025/month=05/day=10/a.csv";
    let a = format!(
        "{TX_HEADER}T1,2025-05-10,compra,Ana,10,200.5,solar\nT2,2025-05-10,venta,Luis,5,100,eolica\nT3,2025-05-10,venta,Eva,1,1,termica\n"
    );
    let b = format!(
        "{TX_HEADER}T4,2025-05-10,compra,Ana,2,3,solar\nT5,2025-05-10,venta,Ana,1,2,solar\n"
    );
    lake.ingest(Dataset::Transacciones, a_key, a.as_bytes())?;
    lake.ingest(
        Dataset::Transacciones,
        "raw/transacciones/year=2025/month=05/day=10/b.csv",
        b.as_bytes(),
    )?;
    lake.load()?;
    assert_eq!(lake.count("SELECT count(*) FROM transacciones")?, 5);

    // WHEN file a is transformed and loaded again, as a replayed event would
    lake.ingest(Dataset::Transacciones, a_key, a.as_bytes())?;
    let again = lake.load()?;
    // THEN its facts replaced themselves
    assert_eq!(lake.count("SELECT count(*) FROM transacciones")?, 5);
    assert_eq!(table_rows(&again, Dataset::Transacciones), 5);

    // WHEN a new version of file a (same key, one row fewer) lands and is loaded
    let a2 = format!(
        "{TX_HEADER}T1,2025-05-10,compra,Ana,10,200.5,solar\nT2,2025-05-10,venta,Luis,6,100,eolica\n"
    );
    lake.ingest(Dataset::Transacciones, a_key, a2.as_bytes())?;
    let newer = lake.load()?;
    // THEN the warehouse holds the new version of a and b, nothing of the old a
    assert_eq!(lake.count("SELECT count(*) FROM transacciones")?, 4);
    assert_eq!(
        lake.count(&format!(
            "SELECT count(*) FROM transacciones WHERE _source_key = '{a_key}' AND id_transaccion = 'T2' AND cantidad_comprada = 6"
        ))?,
        1
    );
    assert!(newer
        .skipped
        .iter()
        .any(|s| s.reason == SkipReason::Superseded && s.source_key == a_key));
    Ok(())
}

#[test]
fn a_hostile_source_key_lands_as_data_and_runs_no_other_statement() -> Result<()> {
    // GIVEN a loaded client and a canary table an injection would drop or empty
    let lake = Lake::new()?;
    lake.ingest(
        Dataset::Clientes,
        "raw/clientes/year=2025/month=05/day=10/c.csv",
        format!("{CLIENTES_HEADER}C1,Ana,residencial,\n").as_bytes(),
    )?;
    lake.load()?;
    {
        let mut wh = Warehouse::open(&lake.warehouse)?;
        wh.run_statements(
            "canary",
            &["CREATE TABLE lago.canary AS SELECT 42 AS alive".to_string()],
        )?;
    }
    // AND a transactions file whose object key tries to break out of a literal in every way
    let hostile = "raw/transacciones/year=2025/month=05/day=10/x'; DROP TABLE lago.canary; --\\'); DELETE FROM lago.clientes; --\n''; SELECT 1;.csv";
    lake.ingest(
        Dataset::Transacciones,
        hostile,
        format!("{TX_HEADER}T1,2025-05-10,compra,Ana,10,2,solar\n").as_bytes(),
    )?;

    // WHEN it is loaded twice
    lake.load()?;
    lake.load()?;

    // THEN the key is stored verbatim, matched exactly by the reload's DELETE (no duplicate),
    // and nothing else ran
    let keys = lake.sql("SELECT DISTINCT _source_key FROM transacciones")?;
    assert_eq!(keys.rows, vec![vec![Cell::Text(hostile.to_string())]]);
    assert_eq!(lake.count("SELECT count(*) FROM transacciones")?, 1);
    assert_eq!(lake.count("SELECT count(*) FROM clientes")?, 1);
    assert_eq!(lake.count("SELECT alive FROM lago.canary")?, 42);
    Ok(())
}

#[test]
fn the_executor_refuses_a_string_with_two_statements() -> Result<()> {
    // GIVEN a warehouse with a canary
    let lake = Lake::new()?;
    let mut wh = Warehouse::open(&lake.warehouse)?;
    wh.run_statements(
        "canary",
        &["CREATE TABLE canary AS SELECT 42 AS alive".to_string()],
    )?;
    // WHEN a string carrying a second statement reaches the executor
    let r = wh.run_statements("x", &["SELECT 1; DROP TABLE canary".to_string()]);
    // THEN it is refused before anything runs
    assert!(matches!(r, Err(WarehouseError::NotOneStatement(_))));
    drop(wh);
    assert_eq!(lake.count("SELECT alive FROM main.canary")?, 42);
    // AND so is such a query
    assert!(matches!(
        query(&lake.warehouse, "SELECT 1; DROP TABLE main.canary"),
        Err(WarehouseError::NotOneStatement(_))
    ));
    Ok(())
}

#[test]
fn rejected_and_empty_files_are_skipped() -> Result<()> {
    // GIVEN a file rejected whole (no segmento column) and one whose every row was rejected
    let lake = Lake::new()?;
    let rejected = lake.ingest(
        Dataset::Clientes,
        "raw/clientes/year=2025/month=05/day=10/no-segmento.csv",
        b"id_cliente,nombre_cliente\nC1,Ana\n",
    )?;
    assert_eq!(rejected.status, Status::Rejected);
    let none_ok = lake.ingest(
        Dataset::Clientes,
        "raw/clientes/year=2025/month=05/day=10/all-bad.csv",
        format!("{CLIENTES_HEADER}C1,Ana,alquiler,\n").as_bytes(),
    )?;
    assert_eq!((none_ok.status, none_ok.rows_ok), (Status::Ok, 0));

    // WHEN the lake is loaded
    let s = lake.load()?;

    // THEN neither is loaded and both are reported
    let mut reasons: Vec<SkipReason> = s.skipped.iter().map(|k| k.reason).collect();
    reasons.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(reasons, vec![SkipReason::NoRows, SkipReason::Rejected]);
    assert_eq!(table_rows(&s, Dataset::Clientes), 0);
    Ok(())
}

#[test]
fn queries_return_typed_cells_and_json_rows() -> Result<()> {
    // GIVEN loaded transactions
    let lake = Lake::new()?;
    lake.ingest(
        Dataset::Transacciones,
        "raw/transacciones/year=2025/month=05/day=10/a.csv",
        format!("{TX_HEADER}T1,2025-05-10T13:45:00Z,compra,Ana,10,200.5,solar\nT2,,venta,Luis,1.5,3,eolica\n").as_bytes(),
    )?;
    lake.load()?;

    // WHEN they are queried
    let r = lake.sql(
        "SELECT id_transaccion, fecha_transaccion, total, _source_line FROM transacciones ORDER BY 1",
    )?;

    // THEN decimals keep every digit, nulls are null and integers are numbers
    assert_eq!(
        r.columns,
        vec![
            "id_transaccion",
            "fecha_transaccion",
            "total",
            "_source_line"
        ]
    );
    assert_eq!(r.rows[0][2], Cell::Decimal("2005.00".into()));
    assert_eq!(r.rows[1][1], Cell::Null);
    assert_eq!(r.rows[1][3], Cell::Int(3));
    let json = serde_json::to_value(r.json_rows())?;
    assert_eq!(json[0]["total"], "2005.00");
    assert_eq!(json[1]["fecha_transaccion"], serde_json::Value::Null);
    assert_eq!(json[1]["_source_line"], 3);
    assert!(json[0]["fecha_transaccion"]
        .as_str()
        .is_some_and(|t| t.starts_with("2025-05-10") && t.contains("13:45:00")));
    // AND the printed table is aligned under its header
    let printed = r.to_string();
    assert!(
        printed.starts_with("id_transaccion  fecha_transaccion"),
        "{printed}"
    );
    assert!(printed.ends_with("(2 rows)"), "{printed}");
    Ok(())
}

#[test]
fn a_missing_lake_or_warehouse_is_a_clear_error() -> Result<()> {
    let lake = Lake::new()?;
    assert!(matches!(
        load_lake(&lake.lake, &lake.warehouse, &Dataset::ALL),
        Err(WarehouseError::NotALake(_))
    ));
    assert!(matches!(
        query(&lake.warehouse, "SELECT 1"),
        Err(WarehouseError::NoWarehouse(_))
    ));
    assert!(!Path::new(&lake.warehouse).exists());
    Ok(())
}

/// An applied BUY archived by the stream, executed at `executed_at` (UTC) at 4,300 COP/USD.
fn archive_buy(lake: &LocalLake, id: &str, executed_at: &str) -> Result<()> {
    use lago::trades::{archive_key, encode_ndjson_gz, ArchiveStatus, ArchivedTrade, Trade};
    let json = format!(
        r#"{{"trade_id":"{id}","user_id":"ana","side":"BUY","usd_amount":"100.00","rate":"4300.0000","executed_at":"{executed_at}"}}"#
    );
    let lines = [ArchivedTrade {
        trade: Trade::parse(json.as_bytes())?,
        status: ArchiveStatus::Applied,
        reason: "".into(),
        sequence_number: format!("4959{}", id.len()),
        sub_sequence_number: None,
        arrived_at: None,
    }];
    let key = archive_key("shardId-000000000000", &lines[0].sequence_number, &lines)
        .ok_or_else(|| anyhow::anyhow!("no archive key"))?;
    lago::lake::LakeStore::put(lake, &key, &encode_ndjson_gz(&lines)?)?;
    Ok(())
}

/// The archive into the history, then its parts into `trades_history`.
fn load_history(lake: &Lake) -> Result<lago_warehouse::FileLoad> {
    use lago::history::{Days, HistoryOptions};
    let local = LocalLake::new(&lake.lake);
    let opts = HistoryOptions {
        days: Days::All,
        load_date: day(12),
    };
    let report = lago::history::run(&local, &opts)?;
    let mut wh = Warehouse::open(&lake.warehouse)?;
    Ok(wh.load_parts(&local, lago::load::Table::TradesHistory, &report.parts)?)
}

#[test]
fn a_rate_published_after_the_trades_reaches_them_with_the_next_load() -> Result<()> {
    // GIVEN a trade of Saturday 3 May archived and loaded before any rate was published
    let lake = Lake::new()?;
    let local = LocalLake::new(&lake.lake);
    archive_buy(&local, "t-1", "2025-05-03T15:00:00Z")?;
    let first = load_history(&lake)?;
    assert_eq!((first.rows_inserted, first.rows_rated), (1, 0));
    assert_eq!(
        lake.count("SELECT count(*) FROM trades_history WHERE trm IS NULL")?,
        1
    );

    // WHEN Friday's rate (in force 2 to 5 May) is published and loaded, then the next trades load
    lake.ingest(
        Dataset::Trm,
        "raw/trm/year=2025/month=05/day=11/trm.csv",
        format!("{TRM_HEADER}4210.55,COP,2025-05-02,2025-05-05\n").as_bytes(),
    )?;
    lake.load()?;
    archive_buy(&local, "t-22", "2025-05-04T15:00:00Z")?;
    let second = load_history(&lake)?;

    // THEN the earlier trade has the rate and its spread; the new one had it from the lake
    assert_eq!((second.rows_inserted, second.rows_rated), (1, 1));
    assert_eq!(
        lake.text("SELECT trade_id, trm, spread_cop FROM trades_history ORDER BY 1")?,
        vec![
            vec!["t-1", "4210.55", "89.4500"],
            vec!["t-22", "4210.55", "89.4500"],
        ]
    );
    // AND a load with every rate known rates nothing
    archive_buy(&local, "t-333", "2025-05-05T15:00:00Z")?;
    assert_eq!(load_history(&lake)?.rows_rated, 0);
    Ok(())
}
