//! The lake on S3: [`S3Lake`] implements the transform's synchronous [`LakeStore`] (objects
//! written through multipart upload once they outgrow one part) and the trade history's
//! [`LakeRead`], [`S3Source`] the transform's [`RawSource`] (GetObject streamed chunk by chunk,
//! resumed with a range request if the connection drops; [`LakeRead`] reads through it too),
//! and [`S3Manifests`] reads manifests for the load.
//!
//! The transform engine is synchronous and runs on a blocking thread (`spawn_blocking`); these
//! adapters bridge to the async SDK with a tokio [`Handle`]. They must never be called from an
//! async task (blocking there would stall the runtime, and tokio refuses it).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart,
};
use aws_sdk_s3::Client;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::{debug, instrument, warn};

use super::{http_status, is_transient};
use crate::ingest::statements::{ManifestError, ManifestReader};
use crate::ingest::sweep::{RawObject, RawObjects};
use crate::ingest::task::S3Uri;
use crate::integrity::{self, ChecksumMismatch, Hasher, ObjectChecksum, Written};
use crate::lake::{LakeError, LakeRead, LakeStore, ObjectSink};
use crate::runtime::{BoxError, ErrorKind};
use crate::transform::{Manifest, RawSource};

/// S3's smallest part (every part but the last must be at least this).
pub const MIN_PART_SIZE: usize = 5 << 20;
/// Default part size: large enough for few requests, small enough for bounded memory.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// Parts uploading while the writer fills the next one.
const PARTS_IN_FLIGHT: usize = 2;
/// Times a read resumes after the connection dropped mid-object.
const READ_RESUMES: u32 = 3;
/// Manifests are small JSON documents; anything bigger is not one.
pub const MAX_MANIFEST_BYTES: u64 = 8 << 20;

/// The S3 client for the lake. With a custom endpoint (moto in tests, a local S3), buckets are
/// addressed by path, as such endpoints have no per-bucket host names.
pub fn client(sdk: &aws_config::SdkConfig) -> Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(sdk.endpoint_url().is_some())
        .build();
    Client::from_conf(conf)
}

/// An S3 failure, classified once so every caller sees the same kind.
#[derive(Debug, thiserror::Error)]
#[error("S3 {operation} of s3://{bucket}/{key} failed")]
pub struct S3Error {
    pub operation: &'static str,
    pub bucket: String,
    pub key: String,
    pub kind: ErrorKind,
    #[source]
    pub source: BoxError,
}

impl S3Error {
    fn new<E>(
        operation: &'static str,
        bucket: &str,
        key: &str,
        err: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> S3Error
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let kind = if is_transient(&err) {
            ErrorKind::Retryable
        } else if matches!(http_status(&err), Some(404) | Some(412)) {
            // 412: the object changed since the event (If-Match); the new write has its own.
            ErrorKind::NotFound
        } else {
            ErrorKind::InvalidInput
        };
        S3Error {
            operation,
            bucket: bucket.to_string(),
            key: key.to_string(),
            kind,
            source: Box::new(err),
        }
    }

    /// As an I/O error for the synchronous ports, keeping this error inside (see
    /// [`S3Error::kind_of_io`]); a missing object reads as `NotFound`.
    pub fn into_io(self) -> io::Error {
        let k = if self.kind == ErrorKind::NotFound {
            io::ErrorKind::NotFound
        } else {
            io::ErrorKind::Other
        };
        io::Error::new(k, self)
    }

    /// The kind of an I/O error that came out of these adapters (`None` for other I/O errors).
    pub fn kind_of_io(err: &io::Error) -> Option<ErrorKind> {
        err.get_ref()
            .and_then(|e| e.downcast_ref::<S3Error>())
            .map(|e| e.kind)
    }

    /// The kind of the first S3 error in a chain of sources (directly, or inside an I/O
    /// error), if there is one: what a port error wrapping it is.
    pub fn kind_in_chain(err: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(s3) = e.downcast_ref::<S3Error>() {
                return Some(s3.kind);
            }
            if let Some(k) = e.downcast_ref::<io::Error>().and_then(S3Error::kind_of_io) {
                return Some(k);
            }
            cur = e.source();
        }
        None
    }
}

fn lake_err(e: S3Error) -> LakeError {
    LakeError::Store(Box::new(e))
}

/// The lake bucket as the transform's object store.
#[derive(Clone)]
pub struct S3Lake {
    client: Client,
    bucket: String,
    handle: Handle,
    part_size: usize,
    /// Aborts of multipart uploads dropped unfinished, to await before the invocation ends.
    cleanups: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl S3Lake {
    pub fn new(client: Client, bucket: impl Into<String>, handle: Handle) -> S3Lake {
        S3Lake {
            client,
            bucket: bucket.into(),
            handle,
            part_size: DEFAULT_PART_SIZE,
            cleanups: Arc::default(),
        }
    }

    /// Part size of multipart uploads (at least S3's 5 MiB minimum).
    pub fn with_part_size(mut self, bytes: usize) -> S3Lake {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Waits for the aborts of uploads that were dropped unfinished (a failed or timed-out
    /// transform), so none is left running when the Lambda freezes.
    pub async fn drain_cleanups(&self) {
        let pending: Vec<JoinHandle<()>> = match self.cleanups.lock() {
            Ok(mut g) => g.drain(..).collect(),
            Err(p) => p.into_inner().drain(..).collect(),
        };
        for h in pending {
            let _ = h.await;
        }
    }
}

impl LakeStore for S3Lake {
    fn create(&self, key: &str) -> Result<Box<dyn ObjectSink>, LakeError> {
        if key.is_empty() || key.len() > 1024 {
            return Err(LakeError::InvalidKey(key.to_string()));
        }
        Ok(Box::new(S3Sink {
            lake: self.clone(),
            key: key.to_string(),
            buf: Vec::new(),
            upload: None,
            bytes: 0,
            crc: Hasher::crc64nvme(),
            done: false,
        }))
    }

    #[instrument(skip(self), fields(bucket = %self.bucket))]
    fn list(&self, prefix: &str) -> Result<Vec<String>, LakeError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        loop {
            match self.handle.block_on(pages.next()) {
                None => break,
                Some(Ok(page)) => keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_owned)),
                ),
                Some(Err(e)) => {
                    return Err(lake_err(S3Error::new(
                        "ListObjectsV2",
                        &self.bucket,
                        prefix,
                        e,
                    )))
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    #[instrument(skip(self), fields(bucket = %self.bucket))]
    fn delete(&self, key: &str) -> Result<(), LakeError> {
        self.handle
            .block_on(
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| lake_err(S3Error::new("DeleteObject", &self.bucket, key, e)))
    }
}

impl LakeRead for S3Lake {
    /// Streams the object's current version, as [`S3Source`] streams a raw object (one network
    /// chunk in memory at a time, resumed if the connection drops). A missing object is
    /// [`LakeError::Io`] with [`io::ErrorKind::NotFound`] (the [`S3Error`] inside); any other
    /// failure is [`LakeError::Store`], classified.
    #[instrument(skip(self), fields(bucket = %self.bucket))]
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, LakeError> {
        let source = S3Source::new(
            self.client.clone(),
            self.handle.clone(),
            &self.bucket,
            key,
            None,
            None,
        );
        match source.reader() {
            Ok(reader) => Ok(Box::new(reader)),
            Err(e) if e.kind == ErrorKind::NotFound => Err(LakeError::Io {
                key: key.to_string(),
                source: e.into_io(),
            }),
            Err(e) => Err(lake_err(e)),
        }
    }
}

type PartResult = Result<CompletedPart, S3Error>;

struct Multipart {
    upload_id: String,
    next_part: i32,
    in_flight: VecDeque<JoinHandle<PartResult>>,
    completed: Vec<CompletedPart>,
}

/// An object being written: buffered up to one part; a single PutObject if it never grows past
/// that, else a multipart upload with up to [`PARTS_IN_FLIGHT`] parts uploading while the next
/// fills. Memory stays at most `part_size × (PARTS_IN_FLIGHT + 1)` whatever the object's size.
///
/// Before its multipart upload starts, uploads of the same key an interrupted earlier write left
/// open are aborted ([`S3Sink::abort_interrupted_uploads`]).
///
/// Every request carries the CRC64NVME of its bytes, computed here as they are written: S3
/// refuses a PutObject or a part whose bytes it received differently, and a multipart upload is
/// completed with the full-object CRC64NVME (`ChecksumType::FullObject`), which S3 checks against
/// the parts and stores with the object. What S3 answers is compared with it once more.
struct S3Sink {
    lake: S3Lake,
    key: String,
    buf: Vec<u8>,
    upload: Option<Multipart>,
    bytes: u64,
    /// The whole object's checksum so far.
    crc: Hasher,
    done: bool,
}

impl S3Sink {
    fn err<E>(
        &self,
        op: &'static str,
        e: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> S3Error
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        S3Error::new(op, &self.lake.bucket, &self.key, e)
    }

    /// Aborts the multipart uploads of exactly this key that an earlier write left open: a
    /// process killed mid-upload (out of memory, a lost host) never reaches its own abort, and
    /// its parts would stay billed and listed until the bucket's lifecycle rule. Outputs are
    /// named after their source, so the re-run of a file writes the keys its interrupted run
    /// was writing, and is the one to clean up after it. Best effort: a failure to list or
    /// abort is logged and the write goes on (the lifecycle rule still removes them).
    #[instrument(skip(self), fields(bucket = %self.lake.bucket, key = %self.key))]
    fn abort_interrupted_uploads(&self) -> u32 {
        let l = &self.lake;
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        let mut aborted = 0;
        loop {
            let page = match l.handle.block_on(
                l.client
                    .list_multipart_uploads()
                    .bucket(&l.bucket)
                    .prefix(&self.key)
                    .set_key_marker(key_marker.take())
                    .set_upload_id_marker(id_marker.take())
                    .send(),
            ) {
                Ok(page) => page,
                Err(e) => {
                    let e = self.err("ListMultipartUploads", e);
                    warn!(key = %self.key, error = %crate::runtime::error_chain(&e), "could not list interrupted multipart uploads; the bucket's lifecycle rule removes them");
                    return aborted;
                }
            };
            // The prefix also matches longer keys (`…-00000.parquet.tmp`): only this one's.
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                if key != self.key {
                    continue;
                }
                match l.handle.block_on(
                    l.client
                        .abort_multipart_upload()
                        .bucket(&l.bucket)
                        .key(key)
                        .upload_id(id)
                        .send(),
                ) {
                    Ok(_) => {
                        aborted += 1;
                        warn!(key = %self.key, upload_id = %id, initiated = ?upload.initiated(), "aborted a multipart upload an interrupted write left open");
                    }
                    Err(e) => {
                        let e = self.err("AbortMultipartUpload", e);
                        warn!(key = %self.key, upload_id = %id, error = %crate::runtime::error_chain(&e), "could not abort an interrupted multipart upload");
                    }
                }
            }
            if page.is_truncated() != Some(true) {
                return aborted;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                return aborted;
            }
        }
    }

    fn start_upload(&mut self) -> Result<(), S3Error> {
        self.abort_interrupted_uploads();
        let l = &self.lake;
        let out = l
            .handle
            .block_on(
                l.client
                    .create_multipart_upload()
                    .bucket(&l.bucket)
                    .key(&self.key)
                    .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
                    .checksum_type(ChecksumType::FullObject)
                    .send(),
            )
            .map_err(|e| self.err("CreateMultipartUpload", e))?;
        let upload_id = out.upload_id().unwrap_or_default().to_string();
        debug!(key = %self.key, %upload_id, "multipart upload started");
        self.upload = Some(Multipart {
            upload_id,
            next_part: 1,
            in_flight: VecDeque::new(),
            completed: Vec::new(),
        });
        Ok(())
    }

    /// Starts uploading one part, then waits until at most [`PARTS_IN_FLIGHT`] are running.
    fn send_part(&mut self, data: Vec<u8>) -> Result<(), S3Error> {
        if self.upload.is_none() {
            self.start_upload()?;
        }
        let l = self.lake.clone();
        let key = self.key.clone();
        let Some(mp) = self.upload.as_mut() else {
            return Ok(());
        };
        let n = mp.next_part;
        mp.next_part += 1;
        let req = l
            .client
            .upload_part()
            .bucket(&l.bucket)
            .key(&key)
            .upload_id(&mp.upload_id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_crc64_nvme(Written::of(&data).checksum.value)
            .body(ByteStream::from(data));
        let bucket = l.bucket.clone();
        mp.in_flight.push_back(l.handle.spawn(async move {
            let out = req
                .send()
                .await
                .map_err(|e| S3Error::new("UploadPart", &bucket, &key, e))?;
            Ok(CompletedPart::builder()
                .part_number(n)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .set_checksum_crc64_nvme(out.checksum_crc64_nvme().map(str::to_owned))
                .build())
        }));
        while mp.in_flight.len() > PARTS_IN_FLIGHT {
            Self::wait_oldest(&l.handle, mp, &l.bucket, &self.key)?;
        }
        Ok(())
    }

    fn wait_oldest(
        handle: &Handle,
        mp: &mut Multipart,
        bucket: &str,
        key: &str,
    ) -> Result<(), S3Error> {
        let Some(h) = mp.in_flight.pop_front() else {
            return Ok(());
        };
        match handle.block_on(h) {
            Ok(Ok(part)) => {
                mp.completed.push(part);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(join) => Err(S3Error {
                operation: "UploadPart",
                bucket: bucket.to_string(),
                key: key.to_string(),
                kind: ErrorKind::Retryable,
                source: Box::new(join),
            }),
        }
    }

    fn complete(&mut self) -> Result<(), S3Error> {
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.send_part(last)?;
        }
        let l = self.lake.clone();
        let Some(mp) = self.upload.as_mut() else {
            return Ok(());
        };
        while !mp.in_flight.is_empty() {
            Self::wait_oldest(&l.handle, mp, &l.bucket, &self.key)?;
        }
        let mut parts = std::mem::take(&mut mp.completed);
        parts.sort_by_key(|p| p.part_number());
        let upload_id = mp.upload_id.clone();
        let checksum = self.crc.checksum();
        let out = l
            .handle
            .block_on(
                l.client
                    .complete_multipart_upload()
                    .bucket(&l.bucket)
                    .key(&self.key)
                    .upload_id(&upload_id)
                    .checksum_crc64_nvme(&checksum.value)
                    .checksum_type(ChecksumType::FullObject)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send(),
            )
            .map_err(|e| self.err("CompleteMultipartUpload", e))?;
        // Completed: nothing to abort any more.
        self.upload = None;
        self.check_stored(
            "CompleteMultipartUpload",
            out.checksum_crc64_nvme(),
            &checksum,
        )
    }

    /// The checksum S3 stored for the object (if it said) must be the one computed here.
    fn check_stored(
        &self,
        operation: &'static str,
        stored: Option<&str>,
        computed: &ObjectChecksum,
    ) -> Result<(), S3Error> {
        match stored {
            Some(v) if v != computed.value => Err(S3Error {
                operation,
                bucket: self.lake.bucket.clone(),
                key: self.key.clone(),
                kind: ErrorKind::ChecksumMismatch,
                source: Box::new(ChecksumMismatch {
                    key: self.key.clone(),
                    expected: computed.clone(),
                    found: ObjectChecksum::from_s3(
                        integrity::Algorithm::Crc64Nvme,
                        v,
                        Some("FULL_OBJECT"),
                    ),
                }),
            }),
            _ => Ok(()),
        }
    }
}

impl Write for S3Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.done {
            return Err(io::Error::other("object already finished"));
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.lake.part_size);
        }
        let room = self.lake.part_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        self.crc.update(&data[..n]);
        self.bytes += n as u64;
        if self.buf.len() >= self.lake.part_size {
            let part = std::mem::replace(&mut self.buf, Vec::with_capacity(self.lake.part_size));
            self.send_part(part).map_err(S3Error::into_io)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Parts are only sent whole; the object appears on `finish`.
        Ok(())
    }
}

impl ObjectSink for S3Sink {
    fn finish(mut self: Box<Self>) -> Result<Written, LakeError> {
        let written = Written {
            bytes: self.bytes,
            checksum: self.crc.checksum(),
        };
        if self.done {
            return Ok(written);
        }
        self.done = true;
        if self.upload.is_some() {
            self.complete().map_err(lake_err)?;
        } else {
            let body = std::mem::take(&mut self.buf);
            let l = self.lake.clone();
            let out = l
                .handle
                .block_on(
                    l.client
                        .put_object()
                        .bucket(&l.bucket)
                        .key(&self.key)
                        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
                        .checksum_crc64_nvme(&written.checksum.value)
                        .body(ByteStream::from(body))
                        .send(),
                )
                .map_err(|e| lake_err(self.err("PutObject", e)))?;
            self.check_stored("PutObject", out.checksum_crc64_nvme(), &written.checksum)
                .map_err(lake_err)?;
        }
        debug!(key = %self.key, bytes = self.bytes, checksum = %written.checksum, "object written");
        Ok(written)
    }
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        // Unfinished (an error, a deadline): abort the upload so no parts linger. Spawned, as a
        // drop may happen anywhere; the handler awaits it through `S3Lake::drain_cleanups`.
        let Some(mp) = self.upload.take() else {
            return;
        };
        for h in &mp.in_flight {
            h.abort();
        }
        let l = self.lake.clone();
        let key = self.key.clone();
        warn!(%key, upload_id = %mp.upload_id, "aborting an unfinished multipart upload");
        let task = l.handle.spawn(async move {
            for h in mp.in_flight {
                let _ = h.await;
            }
            if let Err(e) = l
                .client
                .abort_multipart_upload()
                .bucket(&l.bucket)
                .key(&key)
                .upload_id(&mp.upload_id)
                .send()
                .await
            {
                warn!(%key, error = %crate::runtime::error_chain(&e), "abort of a multipart upload failed; the bucket's lifecycle rule removes it");
            }
        });
        match self.lake.cleanups.lock() {
            Ok(mut g) => g.push(task),
            Err(p) => p.into_inner().push(task),
        }
    }
}

/// One write of a raw object, re-openable (the transform opens it again to copy a rejected
/// file whole). Reads the exact version the event named: by version id, else `If-Match` on
/// its ETag, so a key overwritten meanwhile fails as `NotFound` rather than mixing two files.
///
/// Reads ask for the object's stored checksum (`ChecksumMode::Enabled`): a full-object one is
/// recomputed over the bytes as they are read, resumed reads included, and a difference fails
/// the read at its end with [`ChecksumMismatch`]. The checksum is kept for the manifest
/// ([`RawSource::stored_checksum`]).
#[derive(Clone)]
pub struct S3Source {
    client: Client,
    handle: Handle,
    bucket: String,
    key: String,
    version_id: Option<String>,
    etag: Option<String>,
    stored: Arc<Mutex<Option<ObjectChecksum>>>,
}

/// The checksum S3 stored with the object, from a GetObject answer (one algorithm at most).
fn stored_checksum(
    out: &aws_sdk_s3::operation::get_object::GetObjectOutput,
) -> Option<ObjectChecksum> {
    use integrity::Algorithm as A;
    let kind = out.checksum_type().map(|t| t.as_str());
    [
        (A::Crc64Nvme, out.checksum_crc64_nvme()),
        (A::Crc32c, out.checksum_crc32_c()),
        (A::Crc32, out.checksum_crc32()),
        (A::Sha256, out.checksum_sha256()),
        (A::Sha1, out.checksum_sha1()),
    ]
    .into_iter()
    .find_map(|(a, v)| v.map(|v| ObjectChecksum::from_s3(a, v, kind)))
}

/// A GetObject answer: the body, and what the first one (from byte 0) says of the object.
struct Got {
    body: ByteStream,
    length: Option<u64>,
    checksum: Option<ObjectChecksum>,
}

impl S3Source {
    pub fn new(
        client: Client,
        handle: Handle,
        bucket: impl Into<String>,
        key: impl Into<String>,
        version_id: Option<String>,
        etag: Option<String>,
    ) -> S3Source {
        S3Source {
            client,
            handle,
            bucket: bucket.into(),
            key: key.into(),
            version_id: version_id.filter(|v| !v.is_empty() && v != "null"),
            etag: etag
                .map(|e| e.trim_matches('"').to_string())
                .filter(|e| !e.is_empty()),
            stored: Arc::default(),
        }
    }

    fn get(&self, from: u64) -> Result<Got, S3Error> {
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .checksum_mode(ChecksumMode::Enabled)
            .set_version_id(self.version_id.clone());
        if self.version_id.is_none() {
            req = req.set_if_match(self.etag.as_ref().map(|e| format!("\"{e}\"")));
        }
        if from > 0 {
            req = req.range(format!("bytes={from}-"));
        }
        let out = self.handle.block_on(req.send()).map_err(
            |e: aws_sdk_s3::error::SdkError<GetObjectError, _>| {
                S3Error::new("GetObject", &self.bucket, &self.key, e)
            },
        )?;
        // A range answer carries neither the object's length nor its checksum.
        let first = from == 0;
        Ok(Got {
            length: first
                .then(|| out.content_length().and_then(|n| u64::try_from(n).ok()))
                .flatten(),
            checksum: first.then(|| stored_checksum(&out)).flatten(),
            body: out.body,
        })
    }

    /// The object from its first byte, as a blocking reader.
    fn reader(&self) -> Result<S3Reader, S3Error> {
        let got = self.get(0)?;
        if let Ok(mut g) = self.stored.lock() {
            g.clone_from(&got.checksum);
        }
        let check = got
            .checksum
            .filter(ObjectChecksum::verifiable)
            .and_then(|c| Some((integrity::Hasher::for_algorithm(c.algorithm)?, c)));
        Ok(S3Reader {
            source: self.clone(),
            body: got.body,
            length: got.length,
            check,
            chunk: Bytes::new(),
            read: 0,
            resumes: 0,
        })
    }
}

impl RawSource for S3Source {
    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.reader().map_err(S3Error::into_io)?))
    }

    fn stored_checksum(&self) -> Option<ObjectChecksum> {
        self.stored.lock().ok().and_then(|g| g.clone())
    }
}

/// GetObject's body as a blocking `Read`: one network chunk in memory at a time.
struct S3Reader {
    source: S3Source,
    body: ByteStream,
    /// The object's length, when S3 said.
    length: Option<u64>,
    /// The stored full-object checksum and its computation over the bytes read.
    check: Option<(Hasher, ObjectChecksum)>,
    chunk: Bytes,
    read: u64,
    resumes: u32,
}

impl S3Reader {
    /// At the end of the object: the bytes read must be all of it, with its checksum.
    fn end(&mut self) -> io::Result<usize> {
        let src = &self.source;
        let fail = |source: BoxError| {
            Err(S3Error {
                operation: "GetObject (body)",
                bucket: src.bucket.clone(),
                key: src.key.clone(),
                kind: ErrorKind::ChecksumMismatch,
                source,
            }
            .into_io())
        };
        if let Some(len) = self.length.filter(|n| *n != self.read) {
            return fail(format!("the object has {len} bytes, {} were read", self.read).into());
        }
        if let Some((hasher, expected)) = self.check.take() {
            let found = hasher.checksum();
            if found != expected {
                return fail(Box::new(ChecksumMismatch {
                    key: src.key.clone(),
                    expected,
                    found,
                }));
            }
        }
        Ok(0)
    }
}

impl Read for S3Reader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.chunk.is_empty() {
                let n = out.len().min(self.chunk.len());
                let part = self.chunk.split_to(n);
                if let Some((h, _)) = self.check.as_mut() {
                    h.update(&part);
                }
                out[..n].copy_from_slice(&part);
                self.read += n as u64;
                return Ok(n);
            }
            if out.is_empty() {
                return Ok(0);
            }
            match self.source.handle.block_on(self.body.try_next()) {
                Ok(Some(b)) => self.chunk = b,
                Ok(None) => return self.end(),
                // Every byte arrived and the SDK's own check of the stored checksum failed:
                // the check here says which (a resume would ask for nothing).
                Err(_) if self.length == Some(self.read) => return self.end(),
                Err(e) if self.resumes < READ_RESUMES => {
                    self.resumes += 1;
                    warn!(key = %self.source.key, at = self.read, error = %e, "object read interrupted; resuming");
                    self.body = self.source.get(self.read).map_err(S3Error::into_io)?.body;
                }
                Err(e) => {
                    return Err(S3Error {
                        operation: "GetObject (body)",
                        bucket: self.source.bucket.clone(),
                        key: self.source.key.clone(),
                        kind: ErrorKind::Retryable,
                        source: Box::new(e),
                    }
                    .into_io())
                }
            }
        }
    }
}

/// The lake's raw objects and manifests, for the sweeper ([`RawObjects`]).
#[derive(Clone)]
pub struct S3RawObjects {
    client: Client,
    bucket: String,
}

impl S3RawObjects {
    pub fn new(client: Client, bucket: impl Into<String>) -> S3RawObjects {
        S3RawObjects {
            client,
            bucket: bucket.into(),
        }
    }
}

impl RawObjects for S3RawObjects {
    /// ListObjectVersions of `raw/`, current versions only (no delete marker): the version id
    /// is part of a file's identity in a versioned bucket, as in its S3 event.
    #[instrument(skip(self), fields(bucket = %self.bucket))]
    async fn list_raw(&self, since: DateTime<Utc>) -> Result<Vec<RawObject>, BoxError> {
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix("raw/")
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| S3Error::new("ListObjectVersions", &self.bucket, "raw/", e))?;
            for v in page.versions() {
                let modified = v
                    .last_modified()
                    .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()));
                let (Some(key), Some(modified), true) =
                    (v.key(), modified, v.is_latest().unwrap_or(false))
                else {
                    continue;
                };
                if modified < since {
                    continue;
                }
                out.push(RawObject {
                    key: key.to_string(),
                    version_id: v.version_id().map(str::to_owned),
                    etag: v.e_tag().map(|e| e.trim_matches('"').to_string()),
                    size: v.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                    last_modified: modified,
                });
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                return Ok(out);
            }
        }
    }

    #[instrument(skip(self), fields(bucket = %self.bucket))]
    async fn has_manifest(&self, key: &str) -> Result<bool, BoxError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = S3Error::new("HeadObject", &self.bucket, key, e);
                if e.kind == ErrorKind::NotFound {
                    Ok(false)
                } else {
                    Err(Box::new(e))
                }
            }
        }
    }
}

/// Reads manifests from S3 for the load.
#[derive(Clone)]
pub struct S3Manifests {
    client: Client,
}

impl S3Manifests {
    pub fn new(client: Client) -> S3Manifests {
        S3Manifests { client }
    }
}

impl ManifestReader for S3Manifests {
    #[instrument(skip(self), fields(uri = %uri))]
    async fn read_manifest(&self, uri: &S3Uri) -> Result<Manifest, ManifestError> {
        let u = uri.to_string();
        let out = self
            .client
            .get_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await
            .map_err(|e| {
                let e = S3Error::new("GetObject", &uri.bucket, &uri.key, e);
                match e.kind {
                    ErrorKind::NotFound => ManifestError::NotFound {
                        uri: u.clone(),
                        source: Box::new(e),
                    },
                    ErrorKind::Retryable => ManifestError::Transient {
                        uri: u.clone(),
                        source: Box::new(e),
                    },
                    _ => ManifestError::Refused {
                        uri: u.clone(),
                        source: Box::new(e),
                    },
                }
            })?;
        if out.content_length().unwrap_or(0) as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                uri: u,
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| ManifestError::Transient {
                uri: u.clone(),
                source: Box::new(e),
            })?
            .into_bytes();
        serde_json::from_slice(&body).map_err(|source| ManifestError::Invalid { uri: u, source })
    }
    #[instrument(skip(self))]
    async fn list_keys(
        &self,
        bucket: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, ManifestError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| {
                let uri = S3Uri::new(bucket, prefix).to_string();
                let e = S3Error::new("ListObjectsV2", bucket, prefix, e);
                match e.kind {
                    ErrorKind::Retryable => ManifestError::Transient {
                        uri,
                        source: Box::new(e),
                    },
                    _ => ManifestError::Refused {
                        uri,
                        source: Box::new(e),
                    },
                }
            })?;
        Ok(out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect())
    }
}
