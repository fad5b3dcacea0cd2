use std::fs;
use std::str::FromStr;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Decimal128Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::*;
use crate::contract::Dataset;
use crate::lake::LocalLake;
use crate::trades::{encode_ndjson_gz, Trade};
use crate::transform::{transform, LocalFile, SourceIdentity, TransformOptions, TransformRequest};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn day(s: &str) -> NaiveDate {
    NaiveDate::from_str(s).expect("test date")
}

fn opts(days: Days) -> HistoryOptions {
    HistoryOptions {
        days,
        load_date: day("2026-12-01"),
    }
}

/// An archive line of a trade executed at `at`.
fn line(
    id: &str,
    user: &str,
    side: &str,
    usd: &str,
    rate: &str,
    at: &str,
    status: ArchiveStatus,
) -> ArchivedTrade {
    let json = format!(
        r#"{{"trade_id":"{id}","user_id":"{user}","side":"{side}","usd_amount":"{usd}","rate":"{rate}","executed_at":"{at}"}}"#
    );
    ArchivedTrade {
        trade: Trade::parse(json.as_bytes()).expect("test trade"),
        status,
        reason: if status == ArchiveStatus::Rejected {
            "insufficient_balance".into()
        } else {
            "".into()
        },
        sequence_number: format!("seq-{id}"),
        sub_sequence_number: None,
        arrived_at: None,
    }
}

fn simple(id: &str, status: ArchiveStatus) -> ArchivedTrade {
    line(
        id,
        "u1",
        "BUY",
        "10.00",
        "4000.0000",
        "2026-11-28T17:00:00Z",
        status,
    )
}

fn put_archive(lake: &LocalLake, key: &str, lines: &[ArchivedTrade]) -> TestResult {
    lake.put(key, &encode_ndjson_gz(lines)?)?;
    Ok(())
}

/// The official rates through the real transform: `processed/trm/…` as the ingest writes it.
fn put_rates(lake: &LocalLake, dir: &std::path::Path, csv: &str) -> TestResult {
    let raw = dir.join("trm.csv");
    fs::write(&raw, csv)?;
    let key = "raw/trm/year=2026/month=12/day=01/trm.csv";
    let req = TransformRequest {
        dataset: Dataset::Trm,
        load_date: day("2026-12-01"),
        source: SourceIdentity::of_local_file(&raw, key)?,
    };
    let o = TransformOptions {
        threads: 1,
        ..TransformOptions::default()
    };
    let m = transform(&LocalFile(raw), &req, &o, lake, None)?;
    assert_eq!(m.rows_rejected, 0, "{m:?}");
    Ok(())
}

fn read(lake: &LocalLake, keys: &[String]) -> Result<Vec<RecordBatch>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for k in keys {
        let f = fs::File::open(lake.path(k)?)?;
        for b in ParquetRecordBatchReaderBuilder::try_new(f)?.build()? {
            out.push(b?);
        }
    }
    Ok(out)
}

fn texts(batches: &[RecordBatch], col: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b
                .column_by_name(col)
                .expect("column")
                .as_string::<i32>()
                .clone();
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn decimals(batches: &[RecordBatch], col: &str) -> Vec<Option<Decimal>> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b
                .column_by_name(col)
                .expect("column")
                .as_primitive::<Decimal128Type>()
                .clone();
            let scale = a.scale() as u32;
            (0..a.len())
                .map(|i| {
                    a.is_valid(i)
                        .then(|| Decimal::from_i128_with_scale(a.value(i), scale))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

const K1: &str = "raw/trades/year=2026/month=11/day=28/shardId-000000000000-001-004-aaaa.ndjson.gz";
const K2: &str = "raw/trades/year=2026/month=11/day=28/shardId-000000000000-003-006-bbbb.ndjson.gz";
const K3: &str = "raw/trades/year=2026/month=11/day=29/shardId-000000000000-007-007-cccc.ndjson.gz";

#[test]
fn archive_objects_become_one_enriched_row_per_trade() -> TestResult {
    let dir = tempfile::tempdir()?;
    let lake = LocalLake::new(dir.path().join("lake"));
    // GIVEN Friday's rate for Saturday to Monday, and nothing for Tuesday
    put_rates(
        &lake,
        dir.path(),
        "VALOR;UNIDAD;VIGENCIADESDE;VIGENCIAHASTA\n4.120,55;COP;28/11/2026;30/11/2026\n",
    )?;
    // AND a batch whose last trade was decided beyond its failure point, re-sent as a duplicate
    // in the next batch (split), and a batch of the next UTC day
    use ArchiveStatus::*;
    put_archive(
        &lake,
        K1,
        &[
            line(
                "t1",
                "ana",
                "BUY",
                "100.00",
                "4150.0000",
                "2026-11-28T17:00:00Z",
                Applied,
            ),
            line(
                "t2",
                "ana",
                "SELL",
                "500.00",
                "4160.0000",
                "2026-11-28T17:01:00Z",
                Rejected,
            ),
            line(
                "t4",
                "bo",
                "BUY",
                "0.01",
                "4012.3450",
                "2026-11-29T03:30:00Z",
                Applied,
            ),
        ],
    )?;
    put_archive(
        &lake,
        K2,
        &[
            line(
                "t3",
                "bo",
                "BUY",
                "1.00",
                "4100.0000",
                "2026-11-28T18:00:00Z",
                Applied,
            ),
            line(
                "t4",
                "bo",
                "BUY",
                "0.01",
                "4012.3450",
                "2026-11-29T03:30:00Z",
                Duplicate,
            ),
            line(
                "t1",
                "ana",
                "BUY",
                "100.00",
                "4150.0000",
                "2026-11-28T17:00:00Z",
                Duplicate,
            ),
        ],
    )?;
    put_archive(
        &lake,
        K3,
        &[line(
            "t5",
            "ana",
            "SELL",
            "50.00",
            "4200.0000",
            "2026-12-01T15:00:00Z",
            Applied,
        )],
    )?;

    // WHEN the history runs over every day
    let report = run(&lake, &opts(Days::All))?;

    // THEN each trade is one row, and every line is accounted for
    assert_eq!(
        (
            report.objects,
            report.lines,
            report.rows,
            report.repeats,
            report.invalid
        ),
        (3, 7, 5, 2, 0)
    );
    assert_eq!(report.rates, 1);
    assert_eq!(
        report.rows_without_trm, 1,
        "t5's local date has no published rate"
    );
    let batches = read(&lake, &report.parts)?;
    let ids: Vec<_> = texts(&batches, "trade_id").into_iter().flatten().collect();
    assert_eq!(ids, ["t1", "t2", "t4", "t3", "t5"]);
    let statuses: Vec<_> = texts(&batches, "status").into_iter().flatten().collect();
    assert_eq!(
        statuses,
        ["applied", "rejected", "applied", "applied", "applied"]
    );
    assert_eq!(
        texts(&batches, "reason"),
        ["", "insufficient_balance", "", "", ""].map(|s| Some(s.to_string()))
    );
    let d = |s: &str| Some(Decimal::from_str(s).expect("decimal"));
    assert_eq!(
        decimals(&batches, "cop_notional"),
        [
            d("415000.00"),
            d("2080000.00"),
            d("40.12"),
            d("4100.00"),
            d("210000.00")
        ]
    );
    assert_eq!(
        decimals(&batches, "trm"),
        [d("4120.55"), d("4120.55"), d("4120.55"), d("4120.55"), None]
    );
    assert_eq!(
        decimals(&batches, "spread_cop"),
        [
            d("29.4500"),
            d("39.4500"),
            d("-108.2050"),
            d("-20.5500"),
            None
        ]
    );
    // t4 ran at 03:30 UTC on the 29th: 22:30 on the 28th in Bogotá
    let hours: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("local_hour")
                .expect("col")
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(hours, [12, 12, 22, 13, 10]);
    let dates: Vec<i32> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("local_date")
                .expect("col")
                .as_primitive::<Date32Type>()
                .values()
                .to_vec()
        })
        .collect();
    let day28 = crate::parse::days_since_epoch(day("2026-11-28"));
    assert_eq!(dates, [day28, day28, day28, day28, day28 + 3]);

    // AND each object has its manifest, with lines = rows + repeats + invalid
    for (key, rows, repeats) in [(K1, 3, 0), (K2, 1, 2), (K3, 1, 0)] {
        let stem = key
            .trim_start_matches("raw/trades/")
            .trim_end_matches(".ndjson.gz");
        let m: HistoryManifest =
            serde_json::from_slice(&lake.read_all(&format!("manifests/trades/{stem}.json"))?)?;
        assert_eq!((m.rows, m.repeats, m.invalid), (rows, repeats, 0), "{key}");
        assert_eq!(m.lines, m.rows + m.repeats + m.invalid);
        assert_eq!(m.status, ObjectStatus::Ok);
        assert_eq!(
            m.outputs.processed.as_ref().map(|p| p.key.as_str()),
            Some(format!("processed/trades/{stem}.parquet").as_str())
        );
    }
    Ok(())
}

#[test]
fn a_second_run_finds_nothing_to_do_and_a_dated_run_only_its_day() -> TestResult {
    let dir = tempfile::tempdir()?;
    let lake = LocalLake::new(dir.path());
    put_archive(&lake, K1, &[simple("a", ArchiveStatus::Applied)])?;
    put_archive(&lake, K3, &[simple("b", ArchiveStatus::Applied)])?;

    // WHEN a dated run processes only its day's partition
    let first = run(&lake, &opts(Days::Only(vec![day("2026-11-29")])))?;
    assert_eq!((first.objects, first.rows), (1, 1));
    assert_eq!(first.parts.len(), 1);
    assert!(first.parts[0].contains("day=29"));

    // AND a run of every day processes the rest, and the next one nothing
    let second = run(&lake, &opts(Days::All))?;
    assert_eq!(
        (second.objects, second.already_processed, second.rows),
        (2, 1, 1)
    );
    let third = run(&lake, &opts(Days::All))?;
    assert_eq!(
        (third.objects, third.already_processed, third.rows),
        (2, 2, 0)
    );
    assert!(third.parts.is_empty() && third.manifests.is_empty());
    Ok(())
}

#[test]
fn a_run_past_its_deadline_starts_nothing_and_leaves_the_objects_pending() -> TestResult {
    let dir = tempfile::tempdir()?;
    let lake = LocalLake::new(dir.path());
    put_archive(&lake, K1, &[simple("a", ArchiveStatus::Applied)])?;
    put_archive(&lake, K3, &[simple("b", ArchiveStatus::Applied)])?;

    // WHEN a run starts with its deadline already passed
    let late = run_until(&lake, &opts(Days::All), Some(Instant::now()))?;

    // THEN no object is started, both are pending, and nothing is in the lake
    assert_eq!((late.objects, late.pending, late.rows), (2, 2, 0));
    assert!(late.parts.is_empty() && late.manifests.is_empty());
    assert!(lake.list("manifests/")?.is_empty());
    // AND the next run does them
    let next = run(&lake, &opts(Days::All))?;
    assert_eq!((next.already_processed, next.pending, next.rows), (0, 0, 2));
    Ok(())
}

#[test]
fn bad_lines_are_rejected_with_reasons_and_a_corrupt_object_whole() -> TestResult {
    let dir = tempfile::tempdir()?;
    let lake = LocalLake::new(dir.path());
    // GIVEN an object with a good line, a truncated one, one without a status and one too big
    let good = serde_json::to_string(&simple("ok", ArchiveStatus::Applied))?;
    let body = format!(
        "{good}\n{{\"trade_id\":\"x\"\n{}\n{}\n\n",
        r#"{"trade_id":"n","user_id":"u","side":"BUY","usd_amount":"1","rate":"4000","executed_at":"2026-11-28T17:00:00Z"}"#,
        r#"{"trade_id":"big","user_id":"u","side":"BUY","usd_amount":"1000000000000","rate":"4000","executed_at":"2026-11-28T17:00:00Z","status":"applied"}"#,
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(body.as_bytes())?;
    lake.put(K1, &gz.finish()?)?;
    // AND an object that is not gzip at all, whose trade appears again, readable, later
    lake.put(K2, b"{\"not\": \"gzip\"}")?;
    put_archive(&lake, K3, &[simple("ok2", ArchiveStatus::Applied)])?;

    let report = run(&lake, &opts(Days::All))?;

    assert_eq!(
        (report.lines, report.rows, report.invalid, report.unreadable),
        (5, 2, 3, 1)
    );
    let stem = K1
        .trim_start_matches("raw/trades/")
        .trim_end_matches(".ndjson.gz");
    let m: HistoryManifest =
        serde_json::from_slice(&lake.read_all(&format!("manifests/trades/{stem}.json"))?)?;
    assert_eq!(m.lines, m.rows + m.repeats + m.invalid);
    assert_eq!(
        m.invalid_by_reason,
        [
            ("invalid_json", 1),
            ("missing_field:status", 1),
            ("out_of_range:usd_amount", 1)
        ]
        .map(|(r, n)| (r.to_string(), n))
        .into()
    );
    let rejected = String::from_utf8(lake.read_all(&format!("rejected/trades/{stem}.ndjson"))?)?;
    let lines: Vec<serde_json::Value> = rejected
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(
        lines.iter().map(|l| l["line"].as_u64()).collect::<Vec<_>>(),
        [Some(2), Some(3), Some(4)]
    );
    assert!(lines[2]["record"]
        .as_str()
        .is_some_and(|r| r.contains("\"big\"")));

    let stem2 = K2
        .trim_start_matches("raw/trades/")
        .trim_end_matches(".ndjson.gz");
    let m2: HistoryManifest =
        serde_json::from_slice(&lake.read_all(&format!("manifests/trades/{stem2}.json"))?)?;
    assert_eq!(m2.status, ObjectStatus::Unreadable);
    assert!(m2.outputs.processed.is_none());
    assert!(lake
        .list("processed/trades/")?
        .iter()
        .all(|k| !k.contains(stem2)));
    Ok(())
}

#[test]
fn a_decision_after_a_duplicate_of_its_trade_is_still_written() -> TestResult {
    let dir = tempfile::tempdir()?;
    let lake = LocalLake::new(dir.path());
    put_archive(
        &lake,
        K1,
        &[
            simple("t", ArchiveStatus::Duplicate),
            simple("t", ArchiveStatus::Duplicate),
        ],
    )?;
    put_archive(
        &lake,
        K2,
        &[
            simple("t", ArchiveStatus::Applied),
            simple("t", ArchiveStatus::Duplicate),
        ],
    )?;
    let report = run(&lake, &opts(Days::All))?;
    assert_eq!((report.rows, report.repeats), (2, 2));
    assert_eq!(
        report.rows_by_status,
        [("applied".to_string(), 1), ("duplicate".to_string(), 1)].into()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Over any objects of repeated trade ids: every line is accounted for, every trade id has
    /// a row, and it has a decision row exactly when one of its lines is a decision.
    #[test]
    fn rows_follow_a_straightforward_reference(
        objects in proptest::collection::vec(
            proptest::collection::vec((0u8..6, prop_oneof![Just(ArchiveStatus::Applied), Just(ArchiveStatus::Rejected), Just(ArchiveStatus::Duplicate)]), 1..8),
            1..5,
        )
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let lake = LocalLake::new(dir.path());
        let mut all = Vec::new();
        for (i, lines) in objects.iter().enumerate() {
            let archived: Vec<_> = lines.iter().map(|(id, s)| simple(&format!("t{id}"), *s)).collect();
            let key = format!("raw/trades/year=2026/month=11/day=28/s-{i:03}.ndjson.gz");
            put_archive(&lake, &key, &archived).map_err(|e| TestCaseError::fail(e.to_string()))?;
            all.extend(lines.iter().copied());
        }
        let report = run(&lake, &opts(Days::All)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(report.lines, all.len() as u64);
        prop_assert_eq!(report.lines, report.rows + report.repeats);
        // The reference: per id, a row for its first line; another when a decision follows a
        // first line that was a duplicate.
        let mut want = BTreeMap::<u8, (u64, bool)>::new();
        for (id, s) in &all {
            let decision = *s != ArchiveStatus::Duplicate;
            match want.get_mut(id) {
                None => { want.insert(*id, (1, decision)); }
                Some((n, had)) if decision && !*had => { *n += 1; *had = true; }
                Some(_) => {}
            }
        }
        let batches = read(&lake, &report.parts).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut got = BTreeMap::<u8, u64>::new();
        for id in texts(&batches, "trade_id").into_iter().flatten() {
            let n: u8 = id.trim_start_matches('t').parse().map_err(|_| TestCaseError::fail("id"))?;
            *got.entry(n).or_default() += 1;
        }
        let want_counts: BTreeMap<u8, u64> = want.iter().map(|(k, (n, _))| (*k, *n)).collect();
        prop_assert_eq!(got, want_counts);
    }
}

#[test]
fn features_and_the_training_set_come_from_the_history_in_the_lake() -> TestResult {
    let dir = tempfile::tempdir()?;
    let lake = LocalLake::new(dir.path());
    use ArchiveStatus::*;
    // GIVEN ana's buys on the 1st and the 5th and a sale on the 20th, and a rejected sale of bo
    put_archive(
        &lake,
        K1,
        &[
            line(
                "a1",
                "ana",
                "BUY",
                "100.00",
                "4000.0000",
                "2026-11-01T17:00:00Z",
                Applied,
            ),
            line(
                "b1",
                "bo",
                "SELL",
                "5.00",
                "4000.0000",
                "2026-11-01T18:00:00Z",
                Rejected,
            ),
            line(
                "a2",
                "ana",
                "BUY",
                "50.00",
                "4100.0000",
                "2026-11-05T17:00:00Z",
                Applied,
            ),
            line(
                "a1",
                "ana",
                "BUY",
                "100.00",
                "4000.0000",
                "2026-11-01T17:00:00Z",
                Duplicate,
            ),
            line(
                "a3",
                "ana",
                "SELL",
                "30.00",
                "4200.0000",
                "2026-11-20T17:00:00Z",
                Applied,
            ),
        ],
    )?;
    run(&lake, &opts(Days::All))?;

    // WHEN the features are built
    let report = features::run(&lake)?;

    // THEN ana (the only user with an applied trade) has a row a day from the 1st to the 20th
    assert_eq!((report.trades, report.users, report.rows), (3, 1, 20));
    assert_eq!(report.last_day, Some(day("2026-11-20")));
    // and the rows up to the 13th have a complete 7-day future: the training set
    assert_eq!(report.training_rows, 13);
    let csv = String::from_utf8(lake.read_all(features::TRAINING_SET_KEY)?)?;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 13);
    assert_eq!(
        lines[0],
        "1,1,1,400000.00,400000.00,1.0000,400000.00,100.00,0.00,0"
    );
    assert!(lines[4].starts_with("0,2,2,605000.00,"), "{}", lines[4]);
    assert!(lines.iter().all(|l| l.split(',').count() == 10));
    let columns: Vec<String> =
        serde_json::from_slice(&lake.read_all(features::TRAINING_COLUMNS_KEY)?)?;
    assert_eq!(columns[0], "label_buy_next_7d");
    assert_eq!(columns.len(), 10);
    // AND the feature table reads back with its realized P&L on the last day
    let batches = read(&lake, &[features::USER_FEATURES_KEY.to_string()])?;
    let pnl = decimals(&batches, "realized_pnl_cop");
    assert_eq!(pnl.len(), 20);
    assert_eq!(pnl[19], Decimal::from_str("5000.00").ok());
    Ok(())
}
