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

#[test]
fn transform_infers_dataset_and_date_from_the_path_and_prints_the_manifest() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let raw = "lake/raw/clientes/year=2025/month=04/day=30/clientes.csv";
    let gen = lago(
        &[
            "generate",
            "--dataset",
            "clientes",
            "--rows",
            "500",
            "--dirty",
            "10",
            "--out",
            raw,
            "--json",
        ],
        dir.path(),
    )?;
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&gen.stdout)?;

    let out = lago(
        &["transform", "--input", raw, "--lake", "lake", "--json"],
        dir.path(),
    )?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout)?;
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
