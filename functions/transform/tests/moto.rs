//! `transform` against S3 and Secrets Manager in a moto server (started by the test command
//! through `scripts/moto.sh`; skipped with a message when `LAGO_MOTO_ENDPOINT` is not set). The
//! outputs are read back from moto, the Parquet with the `parquet` crate's reader.

use std::io::Write;
use std::time::Duration;

use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ChecksumType};
use lago::aws::moto::{object_bytes, object_keys, unique_name};
use lago::aws::s3::S3Lake;
use lago::aws::secrets::SecretsManager;
use lago::integrity::Written;
use lago::lake::LakeStore;
use lago::runtime::{Classified, ErrorKind};
use lambda_runtime::{Context, LambdaEvent};
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::{json, Value};
use transform::{dispatch, handle, Config, Deps, S3Storage};

const MIB: usize = 1 << 20;

const CLIENTES: &str = "id_cliente;nombre;segmento;numero_identificacion;email;ciudad\n\
    C-001;José Pérez;Residencial;1020304050;jose.perez@example.com;Bogotá\n\
    C-002;Ana Gómez;COMERCIAL;900123456;ana@empresa.co;Medellín\n\
    C-002;Ana Gómez bis;COMERCIAL;900123456;ana@empresa.co;Medellín\n\
    C-003;Sin Segmento;;1;x@y.co;Cali\n";

/// The function's dependencies on moto: the lake `bucket` and a new salt secret.
async fn deps_for(
    s3: &aws_sdk_s3::Client,
    sm: aws_sdk_secretsmanager::Client,
    bucket: &str,
    threads: usize,
) -> anyhow::Result<Deps<S3Storage, SecretsManager>> {
    let secret = sm
        .create_secret()
        .name(unique_name("lago-pii-salt"))
        .secret_string(r#"{"salt":"moto-pepper"}"#)
        .send()
        .await?;
    let config = Config {
        lake_bucket: bucket.to_string(),
        salt_secret_id: secret.arn().unwrap_or_default().to_string(),
        s3_part_size: 5 * MIB,
        parquet_part_size: 128 * MIB as u64,
        threads,
        deadline_margin: Duration::from_secs(5),
        glue_database: None,
    };
    let storage = S3Storage::new(s3.clone(), tokio::runtime::Handle::current(), &config);
    storage.warm().await;
    Ok(Deps::new(storage, SecretsManager::new(sm), config))
}

/// An S3 client of the moto server and a new bucket named after `name`; `None` (the test is
/// skipped, saying so) without a moto server.
async fn moto_bucket(name: &str) -> anyhow::Result<Option<(aws_sdk_s3::Client, String)>> {
    let Some(endpoint) = lago::aws::moto_endpoint(module_path!()) else {
        return Ok(None);
    };
    let sdk = lago::aws::sdk_config_for(Some(&endpoint)).await;
    let s3 = lago::aws::s3::client(&sdk);
    let bucket = unique_name(name);
    s3.create_bucket().bucket(&bucket).send().await?;
    Ok(Some((s3, bucket)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_reads_s3_and_writes_the_lake_in_moto() -> anyhow::Result<()> {
    let Some(endpoint) = lago::aws::moto_endpoint(module_path!()) else {
        return Ok(());
    };
    let sdk = lago::aws::sdk_config_for(Some(&endpoint)).await;
    let s3 = lago::aws::s3::client(&sdk);
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    // GIVEN a lake bucket with a raw file under an accented key, uploaded with a checksum, and
    // the salt secret
    let bucket = unique_name("lago-moto-lake");
    s3.create_bucket().bucket(&bucket).send().await?;
    let key = "raw/clientes/year=2025/month=05/day=10/clientes bogotá.csv";
    let put = s3
        .put_object()
        .bucket(&bucket)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .body(CLIENTES.as_bytes().to_vec().into())
        .send()
        .await?;
    let etag = put
        .e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    let deps = deps_for(&s3, sm, &bucket, 2).await?;
    let task = json!({
        "bucket": bucket, "key": key, "version_id": null, "etag": etag,
        "size": CLIENTES.len(), "dataset": "clientes", "load_date": "2025-05-10"
    });
    let mut ctx = Context::default();
    ctx.deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64
        + 120_000;
    // WHEN the task runs
    let out = handle(&deps, LambdaEvent::new(task.clone(), ctx.clone())).await?;
    // THEN the counts add up and every output is in moto
    assert_eq!((out.rows_in, out.rows_ok, out.rows_rejected), (4, 2, 2));
    let written = object_keys(&s3, &bucket).await?;
    let part = out.outputs[0]
        .trim_start_matches(&format!("s3://{bucket}/"))
        .to_string();
    let manifest_key = out
        .manifest
        .trim_start_matches(&format!("s3://{bucket}/"))
        .to_string();
    let rejected = out
        .rejected
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches(&format!("s3://{bucket}/"))
        .to_string();
    for k in [&part, &manifest_key, &rejected] {
        assert!(written.contains(k), "{k} not in {written:?}");
    }
    // AND the Parquet part holds the rows ok, read by a reader we did not write
    let bytes = s3
        .get_object()
        .bucket(&bucket)
        .key(&part)
        .send()
        .await?
        .body
        .collect()
        .await?
        .into_bytes();
    let reader = SerializedFileReader::new(bytes)?;
    assert_eq!(reader.metadata().file_metadata().num_rows(), 2);
    // AND the manifest accounts for every row
    let manifest: Value =
        serde_json::from_slice(&object_bytes(&s3, &bucket, &manifest_key).await?)?;
    assert_eq!(manifest["rows_in"], 4);
    assert_eq!(manifest["rejects_by_reason"]["duplicate_key"], 1);
    assert_eq!(manifest["source"]["key"], key);
    // AND it records the producer's checksum, which the read checked
    let producer = Written::of(CLIENTES.as_bytes()).checksum;
    assert_eq!(
        manifest["source"]["stored_checksum"],
        serde_json::to_value(&producer)?
    );
    // AND every output carries the checksum S3 stored with it, as the manifest lists it
    for (field, k) in [("processed", &part), ("rejected", &rejected)] {
        let listed = if field == "processed" {
            &manifest["outputs"][field][0]["checksum"]
        } else {
            &manifest["outputs"][field]["checksum"]
        };
        let head = s3
            .head_object()
            .bucket(&bucket)
            .key(k)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await?;
        assert_eq!(listed["algorithm"], "CRC64NVME", "{k}");
        assert_eq!(head.checksum_crc64_nvme(), listed["value"].as_str(), "{k}");
    }
    // AND the verify task recomputes them: all match
    let verify = json!({"action": "verify", "manifest": out.manifest});
    let report = dispatch(&deps, LambdaEvent::new(verify.clone(), ctx.clone())).await?;
    assert_eq!(report["verified"], 2, "{report}");
    // AND a replay overwrites its outputs: the same objects, no new ones
    handle(&deps, LambdaEvent::new(task, ctx.clone())).await?;
    assert_eq!(object_keys(&s3, &bucket).await?, written);
    // WHEN a part is overwritten with other bytes THEN verify fails with ChecksumMismatch
    s3.put_object()
        .bucket(&bucket)
        .key(&part)
        .body(b"PAR1 not the part PAR1".to_vec().into())
        .send()
        .await?;
    let err = match dispatch(&deps, LambdaEvent::new(verify, ctx)).await {
        Err(e) => e,
        Ok(v) => anyhow::bail!("a changed part verified: {v}"),
    };
    assert_eq!(err.kind(), ErrorKind::ChecksumMismatch, "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_object_whose_bytes_do_not_match_its_stored_checksum_is_not_transformed(
) -> anyhow::Result<()> {
    let Some(endpoint) = lago::aws::moto_endpoint(module_path!()) else {
        return Ok(());
    };
    let sdk = lago::aws::sdk_config_for(Some(&endpoint)).await;
    let s3 = lago::aws::s3::client(&sdk);
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    // GIVEN a raw object stored with a checksum that is not its bytes' (moto keeps the value the
    // producer sent without checking it, as a corrupted object would look to a reader)
    let bucket = unique_name("lago-moto-corrupt");
    s3.create_bucket().bucket(&bucket).send().await?;
    let key = "raw/clientes/year=2025/month=05/day=10/corrupt.csv";
    let put = s3
        .put_object()
        .bucket(&bucket)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .checksum_crc64_nvme(Written::of(b"the bytes the producer meant").checksum.value)
        .body(CLIENTES.as_bytes().to_vec().into())
        .send()
        .await?;
    let etag = put
        .e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    let deps = deps_for(&s3, sm, &bucket, 1).await?;
    let task = json!({
        "bucket": bucket, "key": key, "version_id": null, "etag": etag,
        "size": CLIENTES.len(), "dataset": "clientes", "load_date": "2025-05-10"
    });
    // WHEN the task runs
    let r = handle(&deps, LambdaEvent::new(task, Context::default())).await;
    // THEN it fails with ChecksumMismatch and commits no manifest
    let Err(err) = r else {
        anyhow::bail!("a corrupted raw object was transformed");
    };
    assert_eq!(err.kind(), ErrorKind::ChecksumMismatch, "{err}");
    let keys = object_keys(&s3, &bucket).await?;
    assert!(
        !keys.iter().any(|k| k.starts_with("manifests/")),
        "{keys:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_complete_and_abort_in_moto() -> anyhow::Result<()> {
    let Some((s3, bucket)) = moto_bucket("lago-moto-mpu").await? else {
        return Ok(());
    };
    let lake =
        S3Lake::new(s3.clone(), &bucket, tokio::runtime::Handle::current()).with_part_size(5 * MIB);
    // An 11 MiB object written through the sink: three parts, completed.
    let data: Vec<u8> = (0..11 * MIB).map(|i| (i % 251) as u8).collect();
    let expected = data.clone();
    let l = lake.clone();
    let n = tokio::task::spawn_blocking(move || -> anyhow::Result<Written> {
        let mut sink = l.create("processed/clientes/big.parquet")?;
        for chunk in data.chunks(777_777) {
            sink.write_all(chunk)?;
        }
        Ok(sink.finish()?)
    })
    .await??;
    assert_eq!(n, Written::of(&expected));
    // moto computes the full-object CRC64NVME of the parts it received on its own: the same.
    let head = s3
        .head_object()
        .bucket(&bucket)
        .key("processed/clientes/big.parquet")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await?;
    assert_eq!(head.checksum_crc64_nvme(), Some(n.checksum.value.as_str()));
    assert_eq!(head.checksum_type(), Some(&ChecksumType::FullObject));
    assert_eq!(
        object_bytes(&s3, &bucket, "processed/clientes/big.parquet").await?,
        expected
    );
    // An object dropped half-written: its upload is aborted and it never appears.
    let l = lake.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut sink = l.create("processed/clientes/dropped.parquet")?;
        sink.write_all(&vec![0u8; 6 * MIB])?;
        drop(sink);
        Ok(())
    })
    .await??;
    lake.drain_cleanups().await;
    let uploads = s3.list_multipart_uploads().bucket(&bucket).send().await?;
    assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());
    assert_eq!(
        Vec::from_iter(object_keys(&s3, &bucket).await?),
        vec!["processed/clientes/big.parquet".to_string()]
    );
    // The lake lists and deletes as the transform needs.
    let l = lake.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        assert_eq!(
            l.list("processed/clientes/b")?,
            vec!["processed/clientes/big.parquet"]
        );
        l.delete("processed/clientes/big.parquet")?;
        assert!(l.list("processed/")?.is_empty());
        Ok(())
    })
    .await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_write_aborts_the_upload_an_interrupted_write_left_on_its_key(
) -> anyhow::Result<()> {
    let Some((s3, bucket)) = moto_bucket("lago-moto-orphan").await? else {
        return Ok(());
    };
    let key = "processed/clientes/year=2025/month=05/day=10/c-1a2b3c4d-00000.parquet";
    let longer = format!("{key}.other");
    // GIVEN uploads left open by writers killed mid-upload: one on the key, with a part, and
    // one on a longer key the key is a prefix of
    let mut open = Vec::new();
    for k in [key, longer.as_str()] {
        let up = s3
            .create_multipart_upload()
            .bucket(&bucket)
            .key(k)
            .send()
            .await?;
        let id = up.upload_id().unwrap_or_default().to_string();
        s3.upload_part()
            .bucket(&bucket)
            .key(k)
            .upload_id(&id)
            .part_number(1)
            .body(vec![7u8; 5 * MIB].into())
            .send()
            .await?;
        open.push((k.to_string(), id));
    }
    // WHEN the key is written again, in parts
    let lake =
        S3Lake::new(s3.clone(), &bucket, tokio::runtime::Handle::current()).with_part_size(5 * MIB);
    let data: Vec<u8> = (0..6 * MIB).map(|i| (i % 253) as u8).collect();
    let expected = data.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Written> {
        let mut sink = lake.create(key)?;
        sink.write_all(&data)?;
        Ok(sink.finish()?)
    })
    .await??;
    // THEN the key's interrupted upload is gone, the other key's is left alone
    let uploads = s3.list_multipart_uploads().bucket(&bucket).send().await?;
    let left: Vec<(String, String)> = uploads
        .uploads()
        .iter()
        .map(|u| {
            (
                u.key().unwrap_or_default().to_string(),
                u.upload_id().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(left, vec![open[1].clone()]);
    // AND the object is what was written this time
    assert_eq!(object_bytes(&s3, &bucket, key).await?, expected);
    Ok(())
}

/// The processed `clientes` table as the template declares it, in a new Glue database in moto;
/// the database name.
async fn processed_catalog(glue: &aws_sdk_glue::Client) -> anyhow::Result<String> {
    use aws_sdk_glue::types::{Column, DatabaseInput, StorageDescriptor, TableInput};
    let database = unique_name("energy_processed_db").replace('-', "_");
    glue.create_database()
        .database_input(DatabaseInput::builder().name(&database).build()?)
        .send()
        .await?;
    let mut table = TableInput::builder()
        .name("clientes")
        .table_type("EXTERNAL_TABLE")
        .storage_descriptor(
            StorageDescriptor::builder()
                .location("s3://lake/processed/clientes/")
                .build(),
        );
    for key in ["year", "month", "day"] {
        table = table.partition_keys(Column::builder().name(key).r#type("string").build()?);
    }
    glue.create_table()
        .database_name(&database)
        .table_input(table.build()?)
        .send()
        .await?;
    Ok(database)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partition_a_file_went_to_is_queryable_right_after_the_transform_in_moto(
) -> anyhow::Result<()> {
    let Some(endpoint) = lago::aws::moto_endpoint(module_path!()) else {
        return Ok(());
    };
    let sdk = lago::aws::sdk_config_for(Some(&endpoint)).await;
    let s3 = lago::aws::s3::client(&sdk);
    let glue = aws_sdk_glue::Client::new(&sdk);
    // GIVEN the processed database with its declared table, and a raw file in the lake
    let database = processed_catalog(&glue).await?;
    let bucket = unique_name("lago-moto-catalog");
    s3.create_bucket().bucket(&bucket).send().await?;
    let key = "raw/clientes/year=2025/month=05/day=10/clientes.csv";
    s3.put_object()
        .bucket(&bucket)
        .key(key)
        .body(CLIENTES.as_bytes().to_vec().into())
        .send()
        .await?;
    let mut deps = deps_for(&s3, aws_sdk_secretsmanager::Client::new(&sdk), &bucket, 1).await?;
    deps.config.glue_database = Some(database.clone());
    let deps = deps.with_catalog(lago::aws::glue::GluePartitions::new(glue.clone()));
    let mut ctx = Context::default();
    ctx.deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64
        + 120_000;
    let task = json!({
        "bucket": bucket, "key": key, "version_id": null, "etag": null,
        "size": CLIENTES.len(), "dataset": "clientes", "load_date": "2025-05-10"
    });
    let out = handle(&deps, LambdaEvent::new(task, ctx.clone())).await?;
    // WHEN its partition is registered (twice: a retried state)
    let register = json!({"action": "register", "manifest": out.manifest});
    let first = dispatch(&deps, LambdaEvent::new(register.clone(), ctx.clone())).await?;
    let again = dispatch(&deps, LambdaEvent::new(register, ctx)).await?;
    // THEN GetPartitions lists it once, at the folder the Parquet is in, as Parquet
    assert_eq!(
        (first["created"].as_u64(), again["existed"].as_u64()),
        (Some(1), Some(1))
    );
    let partitions = glue
        .get_partitions()
        .database_name(&database)
        .table_name("clientes")
        .send()
        .await?;
    let listed = partitions.partitions();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].values(), ["2025", "05", "10"]);
    let sd = listed[0]
        .storage_descriptor()
        .expect("a storage descriptor");
    let location = sd.location().unwrap_or_default();
    assert_eq!(
        location,
        format!("s3://{bucket}/processed/clientes/year=2025/month=05/day=10/")
    );
    assert!(out.outputs[0].starts_with(location), "{}", out.outputs[0]);
    assert_eq!(sd.input_format(), Some(lago::catalog::PARQUET_INPUT_FORMAT));
    assert_eq!(sd.columns().first().map(|c| c.name()), Some("id_cliente"));
    Ok(())
}
