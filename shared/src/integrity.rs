//! Object integrity: the checksum lago computes for every object it writes (a full-object
//! CRC64NVME, in S3's own format, so S3 checks it on upload and stores it beside the object),
//! the checksums it checks on what it reads, and [`verify`], which recomputes the checksums the
//! manifests list and reports every object that no longer matches.
//!
//! A checksum is `{"algorithm": "CRC64NVME", "value": "<base64>", "type": "FULL_OBJECT"}`: the
//! value is the big-endian digest in base64, exactly as S3 returns it in
//! `x-amz-checksum-crc64nvme`, so a manifest's checksum and `HeadObject`'s can be compared as
//! strings.

use std::fmt;
use std::io::Read;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use crc_fast::{CrcAlgorithm, Digest as Crc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::lake::{LakeError, LakeRead, LakeStore};

/// The checksum algorithms S3 stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    #[serde(rename = "CRC64NVME")]
    Crc64Nvme,
    #[serde(rename = "CRC32")]
    Crc32,
    #[serde(rename = "CRC32C")]
    Crc32c,
    #[serde(rename = "SHA1")]
    Sha1,
    #[serde(rename = "SHA256")]
    Sha256,
}

impl Algorithm {
    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }
}

/// Whether a checksum covers the object's bytes as one stream, or is a checksum of its
/// multipart upload's part checksums (which only the same part sizes reproduce).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChecksumType {
    #[serde(rename = "FULL_OBJECT")]
    FullObject,
    #[serde(rename = "COMPOSITE")]
    Composite,
}

/// One object's checksum.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectChecksum {
    pub algorithm: Algorithm,
    /// The digest in base64 (a composite one without S3's `-<parts>` suffix).
    pub value: String,
    #[serde(rename = "type")]
    pub kind: ChecksumType,
}

impl ObjectChecksum {
    /// The full-object CRC64NVME whose digest is `crc`.
    pub fn crc64nvme(crc: u64) -> ObjectChecksum {
        ObjectChecksum {
            algorithm: Algorithm::Crc64Nvme,
            value: BASE64.encode(crc.to_be_bytes()),
            kind: ChecksumType::FullObject,
        }
    }

    /// A checksum as S3 reports it: the header's value (`<base64>` or, for a composite one,
    /// `<base64>-<parts>`) and `x-amz-checksum-type` when S3 sent it. Without a type, a
    /// `-<parts>` suffix means composite, as it did before S3 reported types.
    pub fn from_s3(algorithm: Algorithm, value: &str, kind: Option<&str>) -> ObjectChecksum {
        let (digest, parts) = match value.rsplit_once('-') {
            Some((d, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => (d, true),
            _ => (value, false),
        };
        let kind = match kind {
            Some("FULL_OBJECT") => ChecksumType::FullObject,
            Some("COMPOSITE") => ChecksumType::Composite,
            _ if parts => ChecksumType::Composite,
            _ => ChecksumType::FullObject,
        };
        ObjectChecksum {
            algorithm,
            value: digest.to_string(),
            kind,
        }
    }

    /// Whether reading the object's bytes once can check it (a full-object checksum of an
    /// algorithm [`Hasher`] computes).
    pub fn verifiable(&self) -> bool {
        self.kind == ChecksumType::FullObject && Hasher::for_algorithm(self.algorithm).is_some()
    }
}

impl fmt::Display for ObjectChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ChecksumType::FullObject => "",
            ChecksumType::Composite => " (composite)",
        };
        write!(f, "{}:{}{kind}", self.algorithm.name(), self.value)
    }
}

/// A checksum computed as bytes stream by.
pub struct Hasher {
    algorithm: Algorithm,
    state: State,
}

enum State {
    Crc(Box<Crc>),
    Sha256(Box<Sha256>),
}

impl Hasher {
    /// The CRC64NVME every object lago writes carries.
    pub fn crc64nvme() -> Hasher {
        Hasher {
            algorithm: Algorithm::Crc64Nvme,
            state: State::Crc(Box::new(Crc::new(CrcAlgorithm::Crc64Nvme))),
        }
    }

    /// A hasher for `algorithm`, if it is one lago computes (all but SHA-1).
    pub fn for_algorithm(algorithm: Algorithm) -> Option<Hasher> {
        let state = match algorithm {
            Algorithm::Crc64Nvme => State::Crc(Box::new(Crc::new(CrcAlgorithm::Crc64Nvme))),
            Algorithm::Crc32 => State::Crc(Box::new(Crc::new(CrcAlgorithm::Crc32IsoHdlc))),
            Algorithm::Crc32c => State::Crc(Box::new(Crc::new(CrcAlgorithm::Crc32Iscsi))),
            Algorithm::Sha256 => State::Sha256(Box::default()),
            Algorithm::Sha1 => return None,
        };
        Some(Hasher { algorithm, state })
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.state {
            State::Crc(c) => c.update(bytes),
            State::Sha256(s) => s.update(bytes),
        }
    }

    /// The checksum of everything seen so far.
    pub fn checksum(&self) -> ObjectChecksum {
        let digest = match &self.state {
            State::Crc(c) if self.algorithm == Algorithm::Crc64Nvme => {
                c.finalize().to_be_bytes().to_vec()
            }
            // The 32-bit CRCs are four big-endian bytes in S3's headers.
            State::Crc(c) => (c.finalize() as u32).to_be_bytes().to_vec(),
            State::Sha256(s) => s.as_ref().clone().finalize().to_vec(),
        };
        ObjectChecksum {
            algorithm: self.algorithm,
            value: BASE64.encode(digest),
            kind: ChecksumType::FullObject,
        }
    }
}

/// The checksum of everything `r` yields, with its length.
pub fn checksum_of(
    r: &mut dyn Read,
    algorithm: Algorithm,
) -> std::io::Result<(ObjectChecksum, u64)> {
    let Some(mut h) = Hasher::for_algorithm(algorithm) else {
        return Err(std::io::Error::other(format!(
            "{} is not computed here",
            algorithm.name()
        )));
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok((h.checksum(), len)),
            Ok(n) => {
                h.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// An object that was written: its size and the checksum of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    pub checksum: ObjectChecksum,
}

impl Written {
    /// What writing `bytes` whole gives.
    pub fn of(bytes: &[u8]) -> Written {
        let mut h = Hasher::crc64nvme();
        h.update(bytes);
        Written {
            bytes: bytes.len() as u64,
            checksum: h.checksum(),
        }
    }
}

/// The bytes read did not match the checksum stored with the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: the bytes read have checksum {found}, the object's is {expected}")]
pub struct ChecksumMismatch {
    pub key: String,
    pub expected: ObjectChecksum,
    pub found: ObjectChecksum,
}

impl ChecksumMismatch {
    /// The mismatch inside an I/O error, if that is what it is.
    pub fn in_io(e: &std::io::Error) -> Option<&ChecksumMismatch> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|e| e as _);
        while let Some(err) = cur {
            if let Some(m) = err.downcast_ref::<ChecksumMismatch>() {
                return Some(m);
            }
            cur = err.source();
        }
        None
    }
}

/// What [`verify`] found wrong with one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// The bytes' checksum differs from the manifest's.
    Mismatch,
    /// The size differs from the manifest's.
    SizeMismatch,
    /// The manifest names an object that is not there.
    Missing,
    /// The object could not be read to its end.
    Unreadable,
    /// The manifest itself is not a JSON document with outputs.
    InvalidManifest,
}

impl Finding {
    pub fn code(&self) -> &'static str {
        match self {
            Finding::Mismatch => "mismatch",
            Finding::SizeMismatch => "size_mismatch",
            Finding::Missing => "missing",
            Finding::Unreadable => "unreadable",
            Finding::InvalidManifest => "invalid_manifest",
        }
    }
}

/// One object that failed verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub manifest: String,
    pub key: String,
    pub finding: Finding,
    pub expected: Option<String>,
    pub found: Option<String>,
}

/// What a verification looked at and what it found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Manifests read.
    pub manifests: u64,
    /// Outputs they list.
    pub objects: u64,
    /// Outputs read whose checksum and size match.
    pub verified: u64,
    /// Bytes read to verify them.
    pub bytes: u64,
    /// Outputs listed without a checksum (written before manifests carried them): reported,
    /// not failed.
    pub without_checksum: Vec<String>,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether everything verified matched.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One output a manifest lists.
#[derive(Debug, Deserialize)]
struct Listed {
    key: String,
    #[serde(default)]
    bytes: Option<u64>,
    #[serde(default)]
    checksum: Option<ObjectChecksum>,
}

/// The outputs a manifest lists: every object with a `key` under its `outputs` (a list or a
/// single object per zone), whatever the kind of manifest (files, trade batches).
fn listed_outputs(doc: &serde_json::Value) -> Option<Vec<Listed>> {
    let outputs = doc.get("outputs")?.as_object()?;
    let mut out = Vec::new();
    for v in outputs.values() {
        let items: Vec<&serde_json::Value> = match v {
            serde_json::Value::Array(a) => a.iter().collect(),
            serde_json::Value::Object(_) => vec![v],
            _ => continue,
        };
        for item in items {
            if item.get("key").is_some() {
                out.push(serde_json::from_value(item.clone()).ok()?);
            }
        }
    }
    Some(out)
}

/// Recomputes the checksum of every output the manifest at `manifest_key` lists, adding what it
/// finds to `report`. Only a failure to read the lake at all is an error; a missing, changed or
/// unreadable object is a [`Problem`].
pub fn verify_manifest(
    lake: &dyn LakeRead,
    manifest_key: &str,
    report: &mut VerifyReport,
) -> Result<(), LakeError> {
    let problem = |key: &str, finding, expected: Option<String>, found: Option<String>| Problem {
        manifest: manifest_key.to_string(),
        key: key.to_string(),
        finding,
        expected,
        found,
    };
    let body = lake.read_all(manifest_key)?;
    report.manifests += 1;
    let listed = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .as_ref()
        .and_then(listed_outputs);
    let Some(listed) = listed else {
        report
            .problems
            .push(problem(manifest_key, Finding::InvalidManifest, None, None));
        return Ok(());
    };
    for item in listed {
        report.objects += 1;
        let Some(expected) = item.checksum else {
            report.without_checksum.push(item.key);
            continue;
        };
        let mut reader = match lake.open(&item.key) {
            Ok(r) => r,
            Err(LakeError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                report.problems.push(problem(
                    &item.key,
                    Finding::Missing,
                    Some(expected.to_string()),
                    None,
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        match checksum_of(&mut reader, expected.algorithm) {
            Ok((found, len)) => {
                report.bytes += len;
                if found != expected {
                    report.problems.push(problem(
                        &item.key,
                        Finding::Mismatch,
                        Some(expected.to_string()),
                        Some(found.to_string()),
                    ));
                } else if item.bytes.is_some_and(|b| b != len) {
                    report.problems.push(problem(
                        &item.key,
                        Finding::SizeMismatch,
                        item.bytes.map(|b| b.to_string()),
                        Some(len.to_string()),
                    ));
                } else {
                    report.verified += 1;
                }
            }
            // The store itself saw bytes that disagree with what it stored.
            Err(e) if ChecksumMismatch::in_io(&e).is_some() => {
                let found = ChecksumMismatch::in_io(&e).map(|m| m.found.to_string());
                report.problems.push(problem(
                    &item.key,
                    Finding::Mismatch,
                    Some(expected.to_string()),
                    found,
                ));
            }
            Err(e) => report.problems.push(problem(
                &item.key,
                Finding::Unreadable,
                Some(expected.to_string()),
                Some(e.to_string()),
            )),
        }
    }
    Ok(())
}

/// Verifies every manifest under `prefix` (`manifests/` for the whole lake).
pub fn verify<L: LakeStore + LakeRead>(lake: &L, prefix: &str) -> Result<VerifyReport, LakeError> {
    let mut report = VerifyReport::default();
    for key in lake.list(prefix)? {
        if key.ends_with(".json") {
            verify_manifest(lake, &key, &mut report)?;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64nvme_matches_the_published_check_value() {
        // CRC-64/NVME of "123456789" is 0xAE8B14860A799888.
        let mut h = Hasher::crc64nvme();
        h.update(b"12345");
        h.update(b"6789");
        assert_eq!(
            h.checksum(),
            ObjectChecksum::crc64nvme(0xAE8B_1486_0A79_9888)
        );
        assert_eq!(h.checksum().value, "rosUhgp5mIg=");
    }

    #[test]
    fn the_32_bit_crcs_and_sha256_are_s3s_encodings() {
        let of = |a| {
            let mut h = Hasher::for_algorithm(a).expect("computed");
            h.update(b"123456789");
            h.checksum().value
        };
        // Check values: CRC-32 0xCBF43926, CRC-32C 0xE3069283.
        assert_eq!(
            of(Algorithm::Crc32),
            BASE64.encode(0xCBF4_3926u32.to_be_bytes())
        );
        assert_eq!(
            of(Algorithm::Crc32c),
            BASE64.encode(0xE306_9283u32.to_be_bytes())
        );
        assert_eq!(
            of(Algorithm::Sha256),
            "FeKw08M4keuw8e9gnsQZQgwg4yDOlMZfvIwzEkSOsiU="
        );
        assert!(Hasher::for_algorithm(Algorithm::Sha1).is_none());
    }

    #[test]
    fn s3_values_tell_composite_from_full_object() {
        let c = ObjectChecksum::from_s3(Algorithm::Crc32, "abc=-3", None);
        assert_eq!(c.kind, ChecksumType::Composite);
        assert_eq!(c.value, "abc=");
        assert!(!c.verifiable());
        let f = ObjectChecksum::from_s3(Algorithm::Crc64Nvme, "abc=", Some("FULL_OBJECT"));
        assert!(f.verifiable());
        let json = serde_json::to_value(&f).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"algorithm": "CRC64NVME", "value": "abc=", "type": "FULL_OBJECT"})
        );
    }

    use crate::ingest::memory::MemoryLake;
    use crate::transform::OutputObject;

    /// A lake with one manifest listing two outputs written through the lake's own sinks.
    fn lake_with_outputs() -> Result<MemoryLake, LakeError> {
        let lake = MemoryLake::default();
        let a = lake.put("processed/x/a.parquet", b"PAR1 rows PAR1")?;
        let r = lake.put("rejected/x/a.csv", b"id,reason\n1,bad\n")?;
        let manifest = serde_json::json!({
            "outputs": {
                "processed": [OutputObject::written("processed/x/a.parquet", 3, a)],
                "rejected": OutputObject::written("rejected/x/a.csv", 1, r),
                "manifest": "manifests/x/a.json",
            }
        });
        lake.put("manifests/x/a.json", manifest.to_string().as_bytes())?;
        Ok(lake)
    }

    #[test]
    fn untouched_outputs_verify() -> Result<(), LakeError> {
        let lake = lake_with_outputs()?;
        let report = verify(&lake, "manifests/")?;
        assert!(report.ok(), "{report:?}");
        assert_eq!(
            (report.manifests, report.objects, report.verified),
            (1, 2, 2)
        );
        assert_eq!(report.bytes, 14 + 16);
        Ok(())
    }

    #[test]
    fn a_changed_a_missing_and_a_resized_output_are_each_reported() -> Result<(), LakeError> {
        // GIVEN one output changed in place (same size), one deleted
        let lake = lake_with_outputs()?;
        lake.insert("processed/x/a.parquet", b"PAR1 rowz PAR1");
        lake.delete("rejected/x/a.csv")?;
        // WHEN the lake is verified
        let report = verify(&lake, "manifests/")?;
        // THEN both are problems, with what was expected and found
        let findings: Vec<(&str, Finding)> = report
            .problems
            .iter()
            .map(|p| (p.key.as_str(), p.finding))
            .collect();
        assert_eq!(
            findings,
            vec![
                ("processed/x/a.parquet", Finding::Mismatch),
                ("rejected/x/a.csv", Finding::Missing)
            ]
        );
        let m = &report.problems[0];
        assert_ne!(m.expected, m.found);
        assert!(m
            .expected
            .as_deref()
            .is_some_and(|e| e.starts_with("CRC64NVME:")));
        assert_eq!(report.verified, 0);
        Ok(())
    }

    #[test]
    fn manifests_without_checksums_are_counted_and_broken_ones_reported() -> Result<(), LakeError> {
        let lake = MemoryLake::default();
        lake.put("processed/x/old.parquet", b"x")?;
        let old = serde_json::json!({"outputs": {"processed": [
            {"key": "processed/x/old.parquet", "rows": 1, "bytes": 1}
        ]}});
        lake.put("manifests/x/old.json", old.to_string().as_bytes())?;
        lake.put("manifests/x/broken.json", b"{not json")?;
        let report = verify(&lake, "manifests/")?;
        assert_eq!(report.without_checksum, vec!["processed/x/old.parquet"]);
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].finding, Finding::InvalidManifest);
        assert_eq!(report.problems[0].key, "manifests/x/broken.json");
        Ok(())
    }
}
