//! `trades-history` against S3 in a moto server (started by the test command through
//! `scripts/moto.sh`; skipped with a message when `LAGO_MOTO_ENDPOINT` is not set). The archive
//! is written as the stream writes it, the official rates by the real transform; what the
//! handler wrote is read back from moto, the Parquet with the `parquet` crate's reader.

use std::collections::BTreeSet;

use arrow_array::cast::AsArray;
use arrow_array::types::Decimal128Type;
use arrow_array::{Array, RecordBatch};
use chrono::{DateTime, NaiveDate, Utc};
use lago::aws::moto::{object_bytes, object_keys, unique_name};
use lago::aws::s3::S3Lake;
use lago::contract::Dataset;
use lago::trades::{archive_key, encode_ndjson_gz, ArchiveStatus, ArchivedTrade, Trade};
use lago::transform::{transform, LocalFile, SourceIdentity, TransformOptions, TransformRequest};
use lambda_runtime::{Context, LambdaEvent};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};
use std::time::Duration;
use trades_history::{handle_at, Config, Deps};

/// Each object's ETag, to see which ones a run rewrote.
async fn etags(s3: &aws_sdk_s3::Client, bucket: &str) -> anyhow::Result<Vec<(String, String)>> {
    let out = s3.list_objects_v2().bucket(bucket).send().await?;
    Ok(out
        .contents()
        .iter()
        .map(|o| {
            (
                o.key().unwrap_or_default().to_string(),
                o.e_tag().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

fn trade(
    id: &str,
    user: &str,
    side: &str,
    at: &str,
    status: ArchiveStatus,
) -> anyhow::Result<ArchivedTrade> {
    let json = format!(
        r#"{{"trade_id":"{id}","user_id":"{user}","side":"{side}","usd_amount":"100.00","rate":"4150.5000","executed_at":"{at}","channel":"app"}}"#
    );
    Ok(ArchivedTrade {
        trade: Trade::parse(json.as_bytes())?,
        status,
        reason: "".into(),
        sequence_number: format!("495{id:0>3}"),
        sub_sequence_number: None,
        arrived_at: None,
    })
}

/// Puts one archive object as the stream writes it; returns its key.
async fn archive(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    lines: &[ArchivedTrade],
) -> anyhow::Result<String> {
    let key = archive_key("shardId-000000000000", &lines[0].sequence_number, lines)
        .ok_or_else(|| anyhow::anyhow!("no archive key"))?;
    s3.put_object()
        .bucket(bucket)
        .key(&key)
        .body(encode_ndjson_gz(lines)?.into())
        .send()
        .await?;
    Ok(key)
}

/// The official rates as the ingest leaves them: the real transform of a TRM export, written
/// to the bucket through the same S3 adapter.
async fn put_rates(lake: &S3Lake, csv: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let raw = dir.path().join("trm.csv");
    std::fs::write(&raw, csv)?;
    let lake = lake.clone();
    let manifest = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let key = "raw/trm/year=2026/month=11/day=28/trm.csv";
        let req = TransformRequest {
            dataset: Dataset::Trm,
            load_date: NaiveDate::from_ymd_opt(2026, 11, 28).unwrap_or_default(),
            source: SourceIdentity::of_local_file(&raw, key)?,
        };
        let opts = TransformOptions {
            threads: 1,
            ..TransformOptions::default()
        };
        Ok(transform(&LocalFile(raw), &req, &opts, &lake, None)?)
    })
    .await??;
    assert_eq!((manifest.rows_ok, manifest.rows_rejected), (1, 0));
    Ok(())
}

fn batches(bytes: Vec<u8>) -> anyhow::Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))?.build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

fn event(body: Value) -> anyhow::Result<LambdaEvent<Value>> {
    let mut ctx = Context::default();
    ctx.deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64
        + 120_000;
    Ok(LambdaEvent::new(body, ctx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_builds_the_history_and_features_in_moto() -> anyhow::Result<()> {
    let Some(endpoint) = lago::aws::moto_endpoint(module_path!()) else {
        return Ok(());
    };
    let sdk = lago::aws::sdk_config_for(Some(&endpoint)).await;
    let s3 = lago::aws::s3::client(&sdk);
    // GIVEN a lake bucket with the official rate of 28–30 Nov 2026 in processed/trm/
    let bucket = unique_name("lago-moto-history");
    s3.create_bucket().bucket(&bucket).send().await?;
    let lake = S3Lake::new(s3.clone(), &bucket, tokio::runtime::Handle::current());
    put_rates(
        &lake,
        "VALOR;UNIDAD;VIGENCIADESDE;VIGENCIAHASTA\n4.120,55;COP;28/11/2026;30/11/2026\n",
    )
    .await?;
    // AND archive objects of 28 Nov (a batch, then one that re-sends a trade as a duplicate),
    // 29 Nov and 30 Nov
    use ArchiveStatus::{Applied, Duplicate};
    let day28 = [
        archive(
            &s3,
            &bucket,
            &[
                trade("1", "ana", "BUY", "2026-11-28T14:00:00Z", Applied)?,
                trade("2", "bo", "BUY", "2026-11-28T15:00:00Z", Applied)?,
            ],
        )
        .await?,
        archive(
            &s3,
            &bucket,
            &[
                trade("2", "bo", "BUY", "2026-11-28T15:00:00Z", Duplicate)?,
                trade("3", "ana", "SELL", "2026-11-28T16:00:00Z", Applied)?,
            ],
        )
        .await?,
    ];
    let day29 = archive(
        &s3,
        &bucket,
        &[trade("4", "bo", "BUY", "2026-11-29T13:00:00Z", Applied)?],
    )
    .await?;
    let day30 = archive(
        &s3,
        &bucket,
        &[trade("5", "ana", "BUY", "2026-11-30T13:00:00Z", Applied)?],
    )
    .await?;
    let deps = Deps {
        lake,
        config: Config {
            lake_bucket: bucket.clone(),
            deadline_margin: Duration::from_secs(5),
        },
    };
    let now: DateTime<Utc> = "2026-11-29T12:00:00Z".parse()?;

    // WHEN the scheduled task runs on 29 Nov
    let out = handle_at(&deps, event(json!({}))?, now).await?;

    // THEN the objects of 28 and 29 Nov are processed: one row per trade id
    assert_eq!(
        (out.objects, out.already_processed, out.rows, out.repeats),
        (3, 0, 4, 1)
    );
    assert_eq!((out.invalid, out.rows_without_trm), (0, 0));
    let written = object_keys(&s3, &bucket).await?;
    for raw in day28.iter().chain([&day29]) {
        let manifest = raw
            .replace("raw/", "manifests/")
            .replace(".ndjson.gz", ".json");
        assert!(written.contains(&manifest), "{manifest} not in {written:?}");
        let m: Value = serde_json::from_slice(&object_bytes(&s3, &bucket, &manifest).await?)?;
        assert_eq!(m["source"]["key"], raw.as_str());
    }
    assert!(!written
        .iter()
        .any(|k| k.starts_with("manifests/") && k.contains("day=30")));
    // AND the parts, read back by a reader we did not write, hold the four trades and the TRM
    assert_eq!(out.parts, 3);
    // (the load names the two day folders, which hold exactly those three parts)
    let folders = &out.load[0].parts;
    assert_eq!(
        folders,
        &["28", "29"]
            .map(|d| format!("s3://{bucket}/processed/trades/year=2026/month=11/day={d}/"))
    );
    let parts: Vec<&String> = written
        .iter()
        .filter(|k| {
            folders.iter().any(|f| {
                f.ends_with(&format!(
                    "/{}/",
                    k.rsplit_once('/').map_or("", |(dir, _)| dir)
                ))
            })
        })
        .collect();
    assert_eq!(parts.len(), 3, "{parts:?}");
    let mut ids = BTreeSet::new();
    let mut trm = Vec::new();
    for key in parts {
        for b in batches(object_bytes(&s3, &bucket, key).await?)? {
            let id = b
                .column_by_name("trade_id")
                .ok_or_else(|| anyhow::anyhow!("no trade_id"))?
                .as_string::<i32>();
            ids.extend((0..id.len()).map(|i| id.value(i).to_string()));
            let t = b
                .column_by_name("trm")
                .ok_or_else(|| anyhow::anyhow!("no trm"))?
                .as_primitive::<Decimal128Type>();
            trm.extend((0..t.len()).map(|i| t.is_valid(i).then(|| t.value(i))));
        }
    }
    assert_eq!(ids, BTreeSet::from(["1", "2", "3", "4"].map(String::from)));
    assert_eq!(trm, vec![Some(412_055); 4], "TRM 4120.55 at scale 2");
    // AND the features, the training set and its columns are in the bucket
    let features = out
        .features
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no features"))?;
    assert_eq!((features.trades, features.users), (4, 2));
    for key in [
        "processed/features/user_features/user_features.parquet",
        "processed/features/training/train.csv",
        "processed/features/training/columns.json",
    ] {
        assert!(written.contains(key), "{key} not in {written:?}");
    }
    let rows: usize = batches(
        object_bytes(
            &s3,
            &bucket,
            "processed/features/user_features/user_features.parquet",
        )
        .await?,
    )?
    .iter()
    .map(RecordBatch::num_rows)
    .sum();
    assert_eq!(rows as u64, features.rows);
    assert_eq!(
        out.training_set,
        Some(format!(
            "s3://{bucket}/processed/features/training/train.csv"
        ))
    );

    // WHEN it runs again
    let before = etags(&s3, &bucket).await?;
    let again = handle_at(&deps, event(json!({}))?, now).await?;
    // THEN nothing is processed, the features are left alone, nothing in the bucket changed
    assert_eq!(
        (again.objects, again.already_processed, again.rows),
        (3, 3, 0)
    );
    assert_eq!(again.parts, 0);
    assert!(again.load.is_empty());
    assert_eq!((again.features, again.training_set), (None, None));
    assert_eq!(etags(&s3, &bucket).await?, before);

    // WHEN a dated task asks for 30 Nov
    let dated = handle_at(&deps, event(json!({"date": "2026-11-30"}))?, now).await?;
    // THEN only that day's object is processed, and only its outputs (and the features) are new
    assert_eq!((dated.objects, dated.rows), (1, 1));
    let after = object_keys(&s3, &bucket).await?;
    let new: Vec<&String> = after.difference(&written).collect();
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(
        new.iter()
            .all(|k| k.contains("/year=2026/month=11/day=30/")),
        "{new:?}"
    );
    assert!(new.iter().any(|k| *k
        == &day30
            .replace("raw/", "manifests/")
            .replace(".ndjson.gz", ".json")));
    assert_eq!(dated.features.as_ref().map(|f| f.trades), Some(5));

    // WHEN the input is neither {} nor {"date": …}
    let Err(e) = handle_at(&deps, event(json!({"date": "30/11/2026"}))?, now).await else {
        anyhow::bail!("an invalid input should fail");
    };
    // THEN it is refused as InvalidInput and nothing is touched
    assert_eq!(lago::runtime::diagnostic(e).error_type, "InvalidInput");
    assert_eq!(object_keys(&s3, &bucket).await?, after);
    Ok(())
}
