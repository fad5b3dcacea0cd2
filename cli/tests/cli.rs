//! The `lago` binary as a user runs it: exit statuses, inference from the path, JSON output.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result};

fn lago(args: &[&str], cwd: &Path) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_lago"))
        .args(args)
        .current_dir(cwd)
        .env("LAGO_PII_SALT", "cli-test")
        .output()
        .context("running lago")
}

/// Generates `rows` records of `dataset` (`dirty` of them bad) at `raw` in `dir`, transforms
/// them into `dir/lake`, and returns the generation report and the manifest.
fn generate_and_transform(
    dir: &Path,
    dataset: &str,
    raw: &str,
    rows: &str,
    dirty: &str,
) -> Result<(serde_json::Value, serde_json::Value)> {
    let gen = lago(
        &[
            "generate",
            "--dataset",
            dataset,
            "--rows",
            rows,
            "--dirty",
            dirty,
            "--out",
            raw,
            "--json",
        ],
        dir,
    )?;
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let out = lago(
        &["transform", "--input", raw, "--lake", "lake", "--json"],
        dir,
    )?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((
        serde_json::from_slice(&gen.stdout)?,
        serde_json::from_slice(&out.stdout)?,
    ))
}

#[test]
fn transform_infers_dataset_and_date_from_the_path_and_prints_the_manifest() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let raw = "lake/raw/clientes/year=2025/month=04/day=30/clientes.csv";
    let (report, m) = generate_and_transform(dir.path(), "clientes", raw, "500", "10")?;
    assert_eq!(m["dataset"], "clientes");
    assert_eq!(m["load_date"], "2025-04-30");
    assert_eq!(
        m["source"]["key"],
        "raw/clientes/year=2025/month=04/day=30/clientes.csv"
    );
    assert_eq!(m["rows_in"], report["rows"]);
    assert_eq!(m["rows_ok"], report["clean"]);
    let manifest = m["outputs"]["manifest"].as_str().unwrap_or_default();
    assert!(manifest.starts_with("manifests/clientes/year=2025/month=04/day=30/clientes-"));
    assert!(dir.path().join("lake").join(manifest).exists());
    Ok(())
}

#[test]
fn verify_passes_on_what_transform_wrote_and_exits_4_on_a_changed_or_missing_output() -> Result<()>
{
    // GIVEN a lake with one transformed file (processed parts and rejected rows)
    let dir = tempfile::tempdir()?;
    let raw = "lake/raw/transacciones/year=2025/month=04/day=30/t.csv";
    let (_, m) = generate_and_transform(dir.path(), "transacciones", raw, "300", "5")?;
    let part = m["outputs"]["processed"][0]["key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let rejected = m["outputs"]["rejected"]["key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        m["outputs"]["processed"][0]["checksum"]["value"].is_string(),
        "{m}"
    );

    // WHEN the untouched lake is verified THEN every output matches
    let ok = lago(&["verify", "--lake", "lake", "--json"], dir.path())?;
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout)?;
    assert_eq!(report["manifests"], 1);
    assert_eq!(report["objects"], 2);
    assert_eq!(report["verified"], 2);

    // WHEN one byte of the Parquet part changes and the rejected rows are gone
    let path = dir.path().join("lake").join(&part);
    let mut bytes = std::fs::read(&path)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes)?;
    std::fs::remove_file(dir.path().join("lake").join(&rejected))?;
    let bad = lago(&["verify", "--lake", "lake"], dir.path())?;

    // THEN verify exits 4 and names both
    assert_eq!(bad.status.code(), Some(4));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(text.contains(&format!("mismatch\t{part}")), "{text}");
    assert!(text.contains(&format!("missing\t{rejected}")), "{text}");
    assert!(text.contains("0 verified"), "{text}");
    Ok(())
}

#[test]
fn sweep_transforms_what_has_no_manifest_and_a_second_sweep_finds_nothing() -> Result<()> {
    // GIVEN a lake with one file transformed and two landed since without being processed
    let dir = tempfile::tempdir()?;
    let done = "lake/raw/proveedores/year=2025/month=04/day=30/p.csv";
    generate_and_transform(dir.path(), "proveedores", done, "50", "0")?;
    for (dataset, out) in [
        (
            "clientes",
            "lake/raw/clientes/year=2025/month=05/day=01/c.csv",
        ),
        (
            "transacciones",
            "lake/raw/transacciones/year=2025/month=05/day=01/t.csv",
        ),
    ] {
        let gen = lago(
            &[
                "generate",
                "--dataset",
                dataset,
                "--rows",
                "40",
                "--out",
                out,
            ],
            dir.path(),
        )?;
        assert!(
            gen.status.success(),
            "{}",
            String::from_utf8_lossy(&gen.stderr)
        );
    }
    std::fs::create_dir_all(dir.path().join("lake/raw/trades"))?;
    std::fs::write(
        dir.path().join("lake/raw/trades/batch.ndjson.gz"),
        b"not a dataset file",
    )?;

    // WHEN the lake is swept
    let first = lago(&["sweep", "--lake", "lake", "--json"], dir.path())?;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&first.stdout)?;

    // THEN exactly the two unprocessed files are transformed, each to its manifest
    assert_eq!(report["listed"], 4, "{report}");
    assert_eq!(report["processed"], 1, "{report}");
    assert_eq!(report["ignored"], 1, "{report}");
    assert_eq!(report["unprocessed"], 2, "{report}");
    let swept: Vec<&str> = report["transformed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["key"].as_str())
        .collect();
    assert_eq!(
        swept,
        [
            "raw/clientes/year=2025/month=05/day=01/c.csv",
            "raw/transacciones/year=2025/month=05/day=01/t.csv"
        ]
    );
    for t in report["transformed"].as_array().into_iter().flatten() {
        assert_eq!(t["rows_in"], 40, "{t}");
        let manifest = t["manifest"].as_str().unwrap_or_default();
        assert!(
            dir.path().join("lake").join(manifest).is_file(),
            "{manifest}"
        );
    }

    // WHEN it is swept again THEN there is nothing left to do
    let second = lago(&["sweep", "--lake", "lake", "--json"], dir.path())?;
    let again: serde_json::Value = serde_json::from_slice(&second.stdout)?;
    assert_eq!(
        (again["processed"].as_u64(), again["unprocessed"].as_u64()),
        (Some(3), Some(0))
    );
    Ok(())
}

#[test]
fn a_file_rejected_whole_exits_3_and_still_prints_its_manifest() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("x.csv"), "foo,bar\n1,2\n")?;
    let out = lago(
        &[
            "transform",
            "--input",
            "x.csv",
            "--lake",
            "lake",
            "--dataset",
            "transacciones",
            "--json",
        ],
        dir.path(),
    )?;
    assert_eq!(out.status.code(), Some(3));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(m["status"], "rejected");
    assert_eq!(m["file_reason"], "missing_columns");
    Ok(())
}

#[test]
fn usage_errors_exit_2_with_one_sentence() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("x.csv"), "a\n1\n")?;
    // No dataset given and none in the path.
    let out = lago(
        &["transform", "--input", "x.csv", "--lake", "lake"],
        dir.path(),
    )?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot tell the dataset"), "{err}");
    assert!(
        err.contains("clientes, proveedores, transacciones or trm"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    // An unknown dataset is refused by the argument parser.
    let out = lago(
        &[
            "transform",
            "--input",
            "x.csv",
            "--lake",
            "lake",
            "--dataset",
            "ventas",
        ],
        dir.path(),
    )?;
    assert_eq!(out.status.code(), Some(2));
    // A missing input is an error, not a panic.
    let out = lago(
        &[
            "transform",
            "--input",
            "nope.csv",
            "--lake",
            "lake",
            "--dataset",
            "clientes",
        ],
        dir.path(),
    )?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.csv"));
    Ok(())
}

#[cfg(unix)]
#[test]
fn a_reader_that_goes_away_ends_lago_without_a_panic() -> Result<()> {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    // GIVEN lago printing far more than a pipe holds, read by something that stops at once
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lago"))
        .args(["trades", "generate", "--trades", "200000", "--users", "50"])
        .args(["--out", "/dev/stdout"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running lago")?;
    let mut first = [0u8; 16];
    child
        .stdout
        .take()
        .context("stdout")?
        .read_exact(&mut first)?; // the pipe's reader is dropped here
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .context("stderr")?
        .read_to_string(&mut stderr)?;
    let status = child.wait()?;
    // THEN it ends by SIGPIPE, as `head` expects, with nothing on stderr
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(())
}

#[test]
fn trades_history_loads_one_row_per_decided_trade_and_a_second_run_changes_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ok = |args: &[&str]| -> Result<serde_json::Value> {
        let out = lago(args, dir.path())?;
        anyhow::ensure!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null))
    };
    // GIVEN a dirty stream replayed with its archive, and the official rates transformed
    let generated = ok(&[
        "trades",
        "generate",
        "--trades",
        "4000",
        "--users",
        "40",
        "--dirty",
        "8",
        "--days",
        "45",
        "--out",
        "trades.ndjson",
        "--json",
    ])?;
    let replayed = ok(&[
        "trades",
        "replay",
        "--input",
        "trades.ndjson",
        "--batch-size",
        "500",
        "--lake",
        "lake",
        "--json",
    ])?;
    let trm = "lake/raw/trm/year=2026/month=12/day=01/trm.csv";
    ok(&[
        "generate",
        "--dataset",
        "trm",
        "--rows",
        "600",
        "--out",
        trm,
    ])?;
    ok(&["transform", "--input", trm, "--lake", "lake", "--json"])?;

    // WHEN the history runs
    let args = [
        "trades",
        "history",
        "--lake",
        "lake",
        "--warehouse",
        "wh.duckdb",
        "--json",
    ];
    let first = ok(&args)?;

    // THEN every decided trade is one row, applied or rejected, each with its official rate
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(u64::MAX);
    let (valid, oversells, duplicates) = (
        n(&generated["valid"]),
        n(&generated["oversells"]),
        n(&generated["duplicates"]),
    );
    let h = &first["history"];
    assert_eq!(n(&h["lines"]), valid + oversells + duplicates);
    assert_eq!(n(&h["rows"]), valid + oversells);
    assert_eq!(n(&h["repeats"]), duplicates);
    assert_eq!(n(&h["rows_by_status"]["applied"]), valid);
    assert_eq!(n(&h["rows_by_status"]["rejected"]), oversells);
    assert_eq!(n(&h["rows_without_trm"]), 0);
    assert_eq!(n(&first["warehouse"]["table_rows"]), valid + oversells);
    let counted = ok(&[
        "sql",
        "--warehouse",
        "wh.duckdb",
        "--json",
        "SELECT count(DISTINCT trade_id) AS ids, count(*) AS n, count(trm) AS with_trm, \
         sum(CASE WHEN cop_notional = round(usd_amount * rate, 2) THEN 1 ELSE 0 END) AS exact \
         FROM trades_history",
    ])?;
    let number = |v: &serde_json::Value| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(u64::MAX)
    };
    let row = &counted[0];
    for column in ["ids", "n", "with_trm", "exact"] {
        assert_eq!(number(&row[column]), valid + oversells, "{column}: {row}");
    }

    // AND the features replay each user's history to the stream's own portfolio: on the last
    // day, the net USD position and realized P&L are the replay's balances
    let features = &first["features"];
    assert!(n(&features["training_rows"]) > 0 && n(&first["warehouse"]["feature_rows"]) > 0);
    assert_eq!(n(&features["trades"]), valid);
    assert_eq!(n(&features["not_replayable"]), 0);
    let last = ok(&[
        "sql",
        "--warehouse",
        "wh.duckdb",
        "--json",
        "SELECT user_id, CAST(net_usd_position AS VARCHAR) AS usd, \
         CAST(realized_pnl_cop AS VARCHAR) AS pnl FROM user_features \
         WHERE feature_date = (SELECT max(feature_date) FROM user_features) ORDER BY user_id",
    ])?;
    let portfolios = replayed["portfolios"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let with_trades: Vec<_> = portfolios
        .iter()
        .filter(|p| n(&p["trades_applied"]) > 0)
        .collect();
    let rows = last.as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), with_trades.len());
    for (row, p) in rows.iter().zip(&with_trades) {
        assert_eq!(row["user_id"], p["user_id"]);
        // The same decimal whatever its trailing zeros: "120.50" = "120.5", "0.00" = "0".
        let cents = |v: &serde_json::Value| {
            v.as_str().map(|s| {
                if s.contains('.') {
                    s.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    s.to_string()
                }
            })
        };
        assert!(cents(&row["usd"]).is_some(), "{row}");
        assert_eq!(cents(&row["usd"]), cents(&p["usd_balance"]), "{row} vs {p}");
        assert_eq!(
            cents(&row["pnl"]),
            cents(&p["realized_pnl_cop"]),
            "{row} vs {p}"
        );
    }

    // AND a second run finds every object processed and leaves the tables as they were
    let second = ok(&args)?;
    assert_eq!(n(&second["history"]["rows"]), 0);
    assert_eq!(n(&second["history"]["already_processed"]), n(&h["objects"]));
    assert_eq!(n(&second["warehouse"]["table_rows"]), valid + oversells);
    assert!(second["features"].is_null());
    assert_eq!(
        n(&second["warehouse"]["feature_rows"]),
        n(&first["warehouse"]["feature_rows"])
    );
    Ok(())
}

/// The landing DLQ in moto holding the EventBridge sample event and a message that is no
/// event, and the state machine its executions go to: (queue URL, state machine ARN).
async fn landing_dlq_in_moto(endpoint: &str) -> Result<(String, String)> {
    let sdk = lago::aws::sdk_config_for(Some(endpoint)).await;
    let (sqs, sfn) = (
        aws_sdk_sqs::Client::new(&sdk),
        aws_sdk_sfn::Client::new(&sdk),
    );
    let name = lago::aws::moto::unique_name("lago-cli-redrive");
    let machine = sfn
        .create_state_machine()
        .name(&name)
        .definition(r#"{"StartAt":"Transform","States":{"Transform":{"Type":"Pass","End":true}}}"#)
        .role_arn("arn:aws:iam::123456789012:role/lago-ingest")
        .send()
        .await?
        .state_machine_arn()
        .to_string();
    let url = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await?
        .queue_url()
        .context("a queue URL")?
        .to_string();
    let event = include_str!("../../events/s3-landing/eventbridge-object-created.json");
    for body in [event, "not an event"] {
        sqs.send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await?;
    }
    Ok((url, machine))
}

#[test]
fn redrive_landing_dry_runs_then_starts_each_file_once_against_moto() -> Result<()> {
    let Some(endpoint) = lago::aws::moto_endpoint(module_path!()) else {
        return Ok(());
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let (url, machine) = runtime.block_on(landing_dlq_in_moto(&endpoint))?;
    // GIVEN the landing function's settings, as `aws lambda get-function-configuration` prints
    let dir = tempfile::tempdir()?;
    let env = serde_json::json!({"Variables": {
        "STATE_MACHINE_ARN": machine, "LANDING_DLQ_URL": url, "SWEEP_LOOKBACK_HOURS": "48"
    }});
    std::fs::write(dir.path().join("env.json"), env.to_string())?;
    let redrive = |extra: &[&str]| {
        let mut args = vec!["redrive", "landing", "--function-env", "env.json", "--json"];
        args.extend_from_slice(extra);
        let out = Command::new(env!("CARGO_BIN_EXE_lago"))
            .args(&args)
            .current_dir(dir.path())
            .env("AWS_ENDPOINT_URL", &endpoint)
            .output()
            .context("running lago")?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| String::from_utf8_lossy(&out.stderr).to_string())?;
        anyhow::Ok((out.status.code(), report))
    };
    let executions = || {
        runtime.block_on(async {
            let sdk = lago::aws::sdk_config_for(Some(&endpoint)).await;
            let list = aws_sdk_sfn::Client::new(&sdk)
                .list_executions()
                .state_machine_arn(&machine)
                .send()
                .await?;
            anyhow::Ok(list.executions().len())
        })
    };
    // WHEN a dry run reads the queue
    let (code, dry) = redrive(&["--dry-run"])?;
    // THEN it exits 0, says one file would start and one message is no event, starts nothing
    assert_eq!(code, Some(0), "{dry}");
    assert_eq!(
        (dry["would_redrive"].as_u64(), dry["unreadable"].as_u64()),
        (Some(1), Some(1)),
        "{dry}"
    );
    assert_eq!(executions()?, 0);
    // WHEN it redrives
    let (code, first) = redrive(&[])?;
    // THEN the file's execution starts; the unreadable message stays, so it exits 3
    assert_eq!(code, Some(3), "{first}");
    assert_eq!(
        (first["redriven"].as_u64(), first["items"].as_u64()),
        (Some(1), Some(1)),
        "{first}"
    );
    assert_eq!(executions()?, 1);
    // AND a second redrive starts nothing more
    let (_, second) = redrive(&[])?;
    assert_eq!(
        (second["messages"].as_u64(), second["redriven"].as_u64()),
        (Some(1), Some(0)),
        "{second}"
    );
    assert_eq!(executions()?, 1);
    // AND without settings it says which are missing, exit 2
    let out = Command::new(env!("CARGO_BIN_EXE_lago"))
        .args(["redrive", "trades", "--dry-run"])
        .current_dir(dir.path())
        .env_remove("PORTFOLIOS_TABLE")
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PORTFOLIOS_TABLE"));
    Ok(())
}
