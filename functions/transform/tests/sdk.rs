//! The S3 and Secrets Manager adapters against the real SDK clients with mocked responses
//! (`aws-smithy-mocks`): multipart uploads and their abort, retried reads, pinned versions.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadOutput;
use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput;
use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::list_multipart_uploads::ListMultipartUploadsOutput;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_s3::operation::upload_part::UploadPartOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use lago::aws::s3::{S3Error, S3Lake, S3Source};
use lago::aws::secrets::SecretsManager;
use lago::ingest::task::SecretSource;
use lago::integrity::Written;
use lago::lake::LakeStore;
use lago::runtime::ErrorKind;
use lago::transform::RawSource;

const MIB: usize = 1 << 20;

/// What the multipart test writes: 12 MiB of the byte 7.
fn twelve_mib_of_sevens() -> Written {
    Written::of(&vec![7u8; 12 * MIB])
}

fn s3(rules: &[&Rule]) -> aws_sdk_s3::Client {
    mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules, |c| c
        .retry_config(lago::aws::retry_config()))
}

fn multipart_rules(parts_seen: Arc<Mutex<Vec<i32>>>) -> (Rule, Rule, Rule, Rule) {
    let create = mock!(aws_sdk_s3::Client::create_multipart_upload)
        .match_requests(|r| r.bucket() == Some("lake") && r.key() == Some("processed/big.parquet"))
        .then_output(|| {
            CreateMultipartUploadOutput::builder()
                .upload_id("up-1")
                .build()
        });
    let upload = mock!(aws_sdk_s3::Client::upload_part)
        .match_requests(|r| r.upload_id() == Some("up-1"))
        .then_compute_output(move |r| {
            let n = r.part_number().unwrap_or_default();
            if let Ok(mut p) = parts_seen.lock() {
                p.push(n);
            }
            UploadPartOutput::builder()
                .e_tag(format!("\"etag-{n}\""))
                .set_checksum_crc64_nvme(r.checksum_crc64_nvme().map(str::to_owned))
                .build()
        });
    let complete = mock!(aws_sdk_s3::Client::complete_multipart_upload)
        .match_requests(|r| {
            let parts: Vec<(Option<i32>, Option<&str>)> = r
                .multipart_upload()
                .map(|m| {
                    m.parts()
                        .iter()
                        .map(|p| (p.part_number(), p.e_tag()))
                        .collect()
                })
                .unwrap_or_default();
            // Every part with its CRC64NVME; the whole object's, as a full-object checksum.
            let part_checksums = r
                .multipart_upload()
                .is_some_and(|m| m.parts().iter().all(|p| p.checksum_crc64_nvme().is_some()));
            r.upload_id() == Some("up-1")
                && part_checksums
                && r.checksum_type() == Some(&ChecksumType::FullObject)
                && r.checksum_crc64_nvme() == Some(twelve_mib_of_sevens().checksum.value.as_str())
                && parts
                    == vec![
                        (Some(1), Some("\"etag-1\"")),
                        (Some(2), Some("\"etag-2\"")),
                        (Some(3), Some("\"etag-3\"")),
                    ]
        })
        .then_output(|| CompleteMultipartUploadOutput::builder().build());
    let abort = mock!(aws_sdk_s3::Client::abort_multipart_upload)
        .match_requests(|r| r.upload_id() == Some("up-1"))
        .then_output(|| AbortMultipartUploadOutput::builder().build());
    (create, upload, complete, abort)
}

/// No upload that an interrupted write left open on the key.
fn none_left_open() -> Rule {
    mock!(aws_sdk_s3::Client::list_multipart_uploads)
        .match_requests(|r| {
            r.bucket() == Some("lake") && r.prefix() == Some("processed/big.parquet")
        })
        .then_output(|| ListMultipartUploadsOutput::builder().build())
}

/// Writes 12 MiB of sevens to `processed/big.parquet` in odd-sized writes, in parts of 5 MiB.
async fn write_twelve_mib(client: aws_sdk_s3::Client) -> anyhow::Result<Written> {
    let lake =
        S3Lake::new(client, "lake", tokio::runtime::Handle::current()).with_part_size(5 * MIB);
    tokio::task::spawn_blocking(move || -> anyhow::Result<Written> {
        let mut sink = lake.create("processed/big.parquet")?;
        let chunk = vec![7u8; 300_001];
        let mut n = 0;
        while n < 12 * MIB {
            let take = chunk.len().min(12 * MIB - n);
            sink.write_all(&chunk[..take])?;
            n += take;
        }
        Ok(sink.finish()?)
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_is_uploaded_in_ordered_parts() -> anyhow::Result<()> {
    let seen: Arc<Mutex<Vec<i32>>> = Arc::default();
    let (create, upload, complete, abort) = multipart_rules(seen.clone());
    let put =
        mock!(aws_sdk_s3::Client::put_object).then_output(|| PutObjectOutput::builder().build());
    let listed = none_left_open();
    // GIVEN 12 MiB written in odd-sized writes
    let client = s3(&[&create, &upload, &complete, &abort, &put, &listed]);
    let written = write_twelve_mib(client).await?;
    // THEN the key's interrupted uploads were looked for once, and three parts (5 + 5 + 2 MiB)
    // were uploaded and completed in order, nothing aborted
    assert_eq!(written, twelve_mib_of_sevens());
    assert_eq!(listed.num_calls(), 1);
    assert_eq!(create.num_calls(), 1);
    assert_eq!(upload.num_calls(), 3);
    assert_eq!(complete.num_calls(), 1);
    assert_eq!(abort.num_calls(), 0);
    assert_eq!(put.num_calls(), 0);
    let mut parts = seen.lock().map(|p| p.clone()).unwrap_or_default();
    parts.sort_unstable();
    assert_eq!(parts, [1, 2, 3]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_look_for_interrupted_uploads_does_not_stop_the_write() -> anyhow::Result<()> {
    // GIVEN a role that may not list multipart uploads
    let (create, upload, complete, abort) = multipart_rules(Arc::default());
    let refused = mock!(aws_sdk_s3::Client::list_multipart_uploads)
        .sequence()
        .http_status(403, None)
        .repeatedly()
        .build();
    // WHEN a large object is written
    let client = s3(&[&create, &upload, &complete, &abort, &refused]);
    let written = write_twelve_mib(client).await?;
    // THEN it is written all the same, the refusal asked once (not retried)
    assert_eq!(written, twelve_mib_of_sevens());
    assert_eq!(refused.num_calls(), 1);
    assert_eq!((create.num_calls(), complete.num_calls()), (1, 1));
    assert_eq!(abort.num_calls(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_object_is_one_put() -> anyhow::Result<()> {
    let put = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|r| {
            r.key() == Some("manifests/m.json")
                && r.checksum_algorithm() == Some(&ChecksumAlgorithm::Crc64Nvme)
                && r.checksum_crc64_nvme() == Some(Written::of(b"{}").checksum.value.as_str())
        })
        .then_output(|| PutObjectOutput::builder().build());
    let create = mock!(aws_sdk_s3::Client::create_multipart_upload).then_output(|| {
        CreateMultipartUploadOutput::builder()
            .upload_id("never")
            .build()
    });
    let lake = S3Lake::new(
        s3(&[&put, &create]),
        "lake",
        tokio::runtime::Handle::current(),
    );
    let n = tokio::task::spawn_blocking(move || lake.put("manifests/m.json", b"{}")).await??;
    assert_eq!(n, Written::of(b"{}"));
    assert_eq!(n.bytes, 2);
    assert_eq!((put.num_calls(), create.num_calls()), (1, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_part_aborts_the_upload() -> anyhow::Result<()> {
    let create = mock!(aws_sdk_s3::Client::create_multipart_upload).then_output(|| {
        CreateMultipartUploadOutput::builder()
            .upload_id("up-1")
            .build()
    });
    let upload = mock!(aws_sdk_s3::Client::upload_part)
        .sequence()
        .http_status(500, None)
        .repeatedly()
        .build();
    let abort = mock!(aws_sdk_s3::Client::abort_multipart_upload)
        .match_requests(|r| {
            r.upload_id() == Some("up-1") && r.key() == Some("processed/big.parquet")
        })
        .then_output(|| AbortMultipartUploadOutput::builder().build());
    let listed = none_left_open();
    let lake = S3Lake::new(
        s3(&[&create, &upload, &abort, &listed]),
        "lake",
        tokio::runtime::Handle::current(),
    )
    .with_part_size(5 * MIB);
    let l = lake.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<Written, lago::lake::LakeError> {
        let mut sink = l.create("processed/big.parquet")?;
        let data = vec![1u8; 6 * MIB];
        if let Err(e) = sink.write_all(&data) {
            return Err(lago::lake::LakeError::Io {
                key: "processed/big.parquet".into(),
                source: e,
            });
        }
        sink.finish()
    })
    .await?;
    // THEN the finish failed after the SDK's retries, and the upload was aborted
    let Err(e) = result else {
        anyhow::bail!("expected the upload to fail");
    };
    assert!(lago::runtime::error_chain(&e).contains("UploadPart"), "{e}");
    lake.drain_cleanups().await;
    // (two parts were in flight; each was retried until the SDK or its retry quota gave up)
    assert!(upload.num_calls() >= lago::aws::MAX_ATTEMPTS as usize);
    assert_eq!(abort.num_calls(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_retried_and_pinned_to_the_event_etag() -> anyhow::Result<()> {
    let get = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|r| {
            r.bucket() == Some("lake")
                && r.key() == Some("raw/clientes/a b.csv")
                && r.if_match() == Some("\"9b2cf535\"")
                && r.version_id().is_none()
        })
        .sequence()
        .http_status(503, None)
        .http_status(
            503,
            Some("<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".into()),
        )
        .output(|| {
            GetObjectOutput::builder()
                .body(ByteStream::from_static(b"id_cliente,nombre\n1,Ana\n"))
                .build()
        })
        .build();
    let src = S3Source::new(
        s3(&[&get]),
        tokio::runtime::Handle::current(),
        "lake",
        "raw/clientes/a b.csv",
        None,
        Some("9b2cf535".into()),
    );
    let text = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut s = String::new();
        src.open()?.read_to_string(&mut s)?;
        Ok(s)
    })
    .await??;
    assert_eq!(text, "id_cliente,nombre\n1,Ana\n");
    assert_eq!(get.num_calls(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_stored_checksum_differs_fails_as_a_mismatch() -> anyhow::Result<()> {
    // GIVEN S3 answers with a checksum other than the one sent
    let put = mock!(aws_sdk_s3::Client::put_object).then_output(|| {
        PutObjectOutput::builder()
            .checksum_crc64_nvme("AAAAAAAAAAA=")
            .build()
    });
    let lake = S3Lake::new(s3(&[&put]), "lake", tokio::runtime::Handle::current());
    // WHEN an object is written THEN the write fails, classified ChecksumMismatch
    let r = tokio::task::spawn_blocking(move || lake.put("manifests/m.json", b"{}")).await?;
    let Err(e) = r else {
        anyhow::bail!("a mismatched put succeeded");
    };
    assert_eq!(
        S3Error::kind_in_chain(&e),
        Some(ErrorKind::ChecksumMismatch)
    );
    Ok(())
}

/// A source whose GetObject answers `body` with `stored` as its full-object CRC64NVME.
fn source_with_stored(body: &'static [u8], stored: String) -> (S3Source, Rule) {
    let get = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|r| r.checksum_mode() == Some(&aws_sdk_s3::types::ChecksumMode::Enabled))
        .then_output(move || {
            GetObjectOutput::builder()
                .body(ByteStream::from_static(body))
                .content_length(body.len() as i64)
                .checksum_crc64_nvme(stored.clone())
                .checksum_type(ChecksumType::FullObject)
                .build()
        });
    let src = S3Source::new(
        s3(&[&get]),
        tokio::runtime::Handle::current(),
        "lake",
        "raw/clientes/a.csv",
        Some("v1".into()),
        None,
    );
    (src, get)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_reads_check_the_stored_checksum_and_keep_it() -> anyhow::Result<()> {
    const BODY: &[u8] = b"id_cliente,nombre\n1,Ana\n";
    // GIVEN an object whose stored checksum is its bytes'
    let good = Written::of(BODY).checksum;
    let (src, get) = source_with_stored(BODY, good.value.clone());
    // WHEN it is read THEN the bytes come through and the checksum is kept for the manifest
    let (text, kept) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let mut s = String::new();
        src.open()?.read_to_string(&mut s)?;
        Ok((s, src.stored_checksum()))
    })
    .await??;
    assert_eq!(text.as_bytes(), BODY);
    assert_eq!(kept, Some(good));
    assert_eq!(get.num_calls(), 1);

    // GIVEN bytes that do not match the stored checksum
    let (src, _get) = source_with_stored(BODY, Written::of(b"other").checksum.value);
    // WHEN read to the end THEN the read fails with ChecksumMismatch
    let r = tokio::task::spawn_blocking(move || {
        let mut s = Vec::new();
        src.open()?.read_to_end(&mut s)
    })
    .await?;
    let Err(e) = r else {
        anyhow::bail!("a mismatched read succeeded");
    };
    assert_eq!(S3Error::kind_of_io(&e), Some(ErrorKind::ChecksumMismatch));
    assert!(
        lago::integrity::ChecksumMismatch::in_io(&e).is_some(),
        "{e}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_object_reads_as_not_found() -> anyhow::Result<()> {
    let get = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|r| r.version_id() == Some("v1") && r.if_match().is_none())
        .sequence()
        .http_status(
            412,
            Some("<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>".into()),
        )
        .build();
    let src = S3Source::new(
        s3(&[&get]),
        tokio::runtime::Handle::current(),
        "lake",
        "raw/clientes/a.csv",
        Some("v1".into()),
        Some("9b2cf535".into()),
    );
    let err = tokio::task::spawn_blocking(move || src.open().map(|_| ())).await?;
    let Err(e) = err else {
        anyhow::bail!("expected an error");
    };
    assert_eq!(S3Error::kind_of_io(&e), Some(ErrorKind::NotFound));
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    Ok(())
}

#[tokio::test]
async fn the_salt_read_is_retried_when_throttled() -> anyhow::Result<()> {
    let rule = mock!(aws_sdk_secretsmanager::Client::get_secret_value)
        .match_requests(|r| r.secret_id() == Some("lago-pii-salt"))
        .sequence()
        .http_status(
            400,
            Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into()),
        )
        .output(|| {
            GetSecretValueOutput::builder()
                .secret_string(r#"{"salt":"pepper"}"#)
                .build()
        })
        .build();
    let client = mock_client!(aws_sdk_secretsmanager, RuleMode::Sequential, [&rule], |c| c
        .retry_config(lago::aws::retry_config()));
    let raw = SecretsManager::new(client)
        .secret_bytes("lago-pii-salt")
        .await?;
    assert_eq!(
        lago::ingest::task::pii_salt("lago-pii-salt", &raw)?,
        b"pepper"
    );
    assert_eq!(rule.num_calls(), 2);
    Ok(())
}
