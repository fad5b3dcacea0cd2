//! The lake's layout (zones, partitions, deterministic names) and the port through which the
//! transform writes objects, with its local-folder adapter.
//!
//! The same keys are used in S3 (`s3://<lake>/<key>`) and in a local folder laid out like the
//! bucket (`<dir>/<key>`), so the CLI writes exactly what the Lambda writes.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read as _, Write};
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};

use crate::contract::Dataset;
use crate::integrity::{Hasher, Written};

/// Zones of the lake (top-level prefixes of the bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Raw,
    Processed,
    Rejected,
    Manifests,
}

impl Zone {
    pub fn prefix(&self) -> &'static str {
        match self {
            Zone::Raw => "raw",
            Zone::Processed => "processed",
            Zone::Rejected => "rejected",
            Zone::Manifests => "manifests",
        }
    }
}

/// `<zone>/<dataset>/year=YYYY/month=MM/day=DD/`
pub fn partition_prefix(zone: Zone, dataset: Dataset, date: NaiveDate) -> String {
    format!(
        "{}/{}/year={:04}/month={:02}/day={:02}/",
        zone.prefix(),
        dataset.name(),
        date.year(),
        date.month(),
        date.day()
    )
}

/// The dataset named by a key or path containing `raw/<dataset>/`.
pub fn dataset_from_key(key: &str) -> Option<Dataset> {
    let norm = key.replace('\\', "/");
    let mut parts = norm.split('/').peekable();
    while let Some(p) = parts.next() {
        if p == "raw" {
            if let Some(next) = parts.peek() {
                if let Ok(d) = next.parse::<Dataset>() {
                    return Some(d);
                }
            }
        }
    }
    None
}

/// The date named by `year=YYYY/month=MM/day=DD` segments of a key, if all three are there.
pub fn date_from_key(key: &str) -> Option<NaiveDate> {
    let (mut y, mut m, mut d) = (None, None, None);
    for seg in key.split(['/', '\\']) {
        if let Some((k, v)) = seg.split_once('=') {
            let v: Option<u32> = v.parse().ok();
            match k {
                "year" => y = v,
                "month" => m = v,
                "day" => d = v,
                _ => {}
            }
        }
    }
    NaiveDate::from_ymd_opt(y? as i32, m?, d?)
}

/// File name of a key without its directory.
pub fn file_name(key: &str) -> &str {
    key.rsplit(['/', '\\']).next().unwrap_or(key)
}

/// The stem used for output names: the file name without `.csv`, `.txt`, `.tsv` and `.gz`
/// extensions, restricted to `[A-Za-z0-9._-]` so that output keys are safe everywhere.
pub fn output_stem(key: &str) -> String {
    let mut name = file_name(key);
    loop {
        let lower = name.to_ascii_lowercase();
        let cut = [".gz", ".csv", ".txt", ".tsv"]
            .iter()
            .find(|ext| lower.ends_with(*ext))
            .map(|ext| name.len() - ext.len());
        match cut {
            Some(n) if n > 0 => name = &name[..n],
            _ => break,
        }
    }
    let stem: String = name
        .chars()
        .map(crate::text::strip_accent)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() {
        "file".to_string()
    } else {
        stem
    }
}

/// Extension kept for a rejected copy of the original (`.csv`, `.csv.gz`, …).
pub fn original_extension(key: &str) -> String {
    let name = file_name(key);
    let stem_len = name
        .char_indices()
        .find(|(_, c)| *c == '.')
        .map_or(name.len(), |(i, _)| i);
    let ext = &name[stem_len..];
    if ext.is_empty() {
        ".csv".to_string()
    } else {
        ext.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect()
    }
}

/// Errors of the object store port.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake I/O on {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    #[error("object store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("this lake cannot {0}")]
    Unsupported(&'static str),
}

/// An object being written. Nothing is visible under its key until `finish` succeeds.
pub trait ObjectSink: Write + Send {
    /// Completes the object and returns its size and its checksum (the full-object CRC64NVME of
    /// the bytes written, which a store that keeps checksums has checked and stored with it).
    fn finish(self: Box<Self>) -> Result<Written, LakeError>;
}

/// Write access to the lake: what the transform needs and nothing more.
pub trait LakeStore: Send + Sync {
    fn create(&self, key: &str) -> Result<Box<dyn ObjectSink>, LakeError>;
    /// Keys that start with `prefix`.
    fn list(&self, prefix: &str) -> Result<Vec<String>, LakeError>;
    fn delete(&self, key: &str) -> Result<(), LakeError>;

    /// Gives a finished object another key, replacing what is there. Only sources named after
    /// their content ([`crate::transform::SourceVersion::Content`], local files) need it; a
    /// store whose sources are named up front (S3, by ETag) may leave it unsupported.
    fn rename(&self, from: &str, to: &str) -> Result<(), LakeError> {
        let _ = (from, to);
        Err(LakeError::Unsupported("rename objects"))
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<Written, LakeError> {
        let mut sink = self.create(key)?;
        sink.write_all(bytes).map_err(|source| LakeError::Io {
            key: key.to_string(),
            source,
        })?;
        sink.finish()
    }
}

/// Read access to the lake's objects: what the trade history reads (the archive, the official
/// rates) besides the listing of [`LakeStore`].
pub trait LakeRead: Send + Sync {
    /// The object's bytes as a stream; [`LakeError::Io`] with `NotFound` when there is none.
    fn open(&self, key: &str) -> Result<Box<dyn io::Read + Send>, LakeError>;

    /// The whole object (for small ones: manifests, Parquet footers and rates).
    fn read_all(&self, key: &str) -> Result<Vec<u8>, LakeError> {
        let mut out = Vec::new();
        self.open(key)?
            .read_to_end(&mut out)
            .map_err(|source| LakeError::Io {
                key: key.to_string(),
                source,
            })?;
        Ok(out)
    }
}

/// A local folder laid out like the bucket.
#[derive(Debug, Clone)]
pub struct LocalLake {
    root: PathBuf,
}

impl LocalLake {
    pub fn new(root: impl Into<PathBuf>) -> LocalLake {
        LocalLake { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a key; keys are relative, `/`-separated and may not climb out of the root.
    pub fn path(&self, key: &str) -> Result<PathBuf, LakeError> {
        if key.is_empty()
            || key.starts_with('/')
            || key.split('/').any(|s| s == ".." || s == ".")
            || key.contains('\\')
            || key.contains('\0')
        {
            return Err(LakeError::InvalidKey(key.to_string()));
        }
        Ok(self.root.join(key))
    }
}

struct LocalSink {
    key: String,
    tmp: PathBuf,
    dest: PathBuf,
    /// `None` once finished.
    out: Option<BufWriter<File>>,
    bytes: u64,
    crc: Hasher,
}

impl Write for LocalSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("object already finished"))?;
        let n = out.write(buf)?;
        self.bytes += n as u64;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

impl ObjectSink for LocalSink {
    fn finish(mut self: Box<Self>) -> Result<Written, LakeError> {
        let key = self.key.clone();
        let io = |source| LakeError::Io {
            key: key.clone(),
            source,
        };
        let written = Written {
            bytes: self.bytes,
            checksum: self.crc.checksum(),
        };
        let Some(out) = self.out.take() else {
            return Ok(written);
        };
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_data().map_err(io)?;
        drop(file);
        // Rename makes the object appear whole, like an S3 PUT.
        fs::rename(&self.tmp, &self.dest).map_err(io)?;
        Ok(written)
    }
}

impl Drop for LocalSink {
    fn drop(&mut self) {
        // An object dropped before `finish` never appears: remove its temporary file.
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Creates the folder an object of `key` goes in.
fn create_parent(dest: &Path, key: &str) -> Result<(), LakeError> {
    match dest.parent() {
        Some(dir) => fs::create_dir_all(dir).map_err(|source| LakeError::Io {
            key: key.to_string(),
            source,
        }),
        None => Ok(()),
    }
}

impl LakeRead for LocalLake {
    fn open(&self, key: &str) -> Result<Box<dyn io::Read + Send>, LakeError> {
        let file = File::open(self.path(key)?).map_err(|source| LakeError::Io {
            key: key.to_string(),
            source,
        })?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 16, file)))
    }
}

impl LakeStore for LocalLake {
    fn create(&self, key: &str) -> Result<Box<dyn ObjectSink>, LakeError> {
        let dest = self.path(key)?;
        create_parent(&dest, key)?;
        let io = |source| LakeError::Io {
            key: key.to_string(),
            source,
        };
        let tmp = dest.with_file_name(format!(".{}.{}.tmp", file_name(key), std::process::id()));
        let file = File::create(&tmp).map_err(io)?;
        Ok(Box::new(LocalSink {
            key: key.to_string(),
            tmp,
            dest,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            bytes: 0,
            crc: Hasher::crc64nvme(),
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, LakeError> {
        // List the directory holding the prefix and filter by name, as S3 would by prefix.
        let (dir_key, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let dir = if dir_key.is_empty() {
            self.root.clone()
        } else {
            self.path(dir_key)?
        };
        let mut out = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let entries = match fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(LakeError::Io {
                        key: prefix.to_string(),
                        source,
                    })
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let key = rel.to_string_lossy().replace('\\', "/");
                if path.is_dir() {
                    if prefix.starts_with(&format!("{key}/")) || key.starts_with(prefix) {
                        stack.push(path);
                    }
                } else if key.starts_with(prefix) && !file_name(&key).starts_with('.') {
                    out.push(key);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), LakeError> {
        let dest = self.path(to)?;
        create_parent(&dest, to)?;
        // Atomic on one file system: readers see the old object or the new one, whole.
        fs::rename(self.path(from)?, &dest).map_err(|source| LakeError::Io {
            key: to.to_string(),
            source,
        })
    }

    fn delete(&self, key: &str) -> Result<(), LakeError> {
        match fs::remove_file(self.path(key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LakeError::Io {
                key: key.to_string(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_partitioned_by_date() {
        let d = NaiveDate::from_ymd_opt(2025, 5, 9).expect("date");
        assert_eq!(
            partition_prefix(Zone::Processed, Dataset::Clientes, d),
            "processed/clientes/year=2025/month=05/day=09/"
        );
    }

    #[test]
    fn dataset_and_date_come_from_the_key() {
        let key = "lake/raw/transacciones/year=2025/month=05/day=10/ventas mayo.csv.gz";
        assert_eq!(dataset_from_key(key), Some(Dataset::Transacciones));
        assert_eq!(date_from_key(key), NaiveDate::from_ymd_opt(2025, 5, 10));
        assert_eq!(dataset_from_key("raw/otros/x.csv"), None);
        assert_eq!(date_from_key("raw/clientes/x.csv"), None);
        assert_eq!(
            date_from_key("raw/clientes/year=2025/month=13/day=01/x.csv"),
            None
        );
    }

    #[test]
    fn output_stems_are_safe_and_drop_extensions() {
        assert_eq!(output_stem("raw/c/ventas mayo.csv.gz"), "ventas_mayo");
        assert_eq!(output_stem("raw/c/Energía';DROP.CSV"), "Energia__DROP");
        assert_eq!(original_extension("raw/c/ventas.csv.gz"), ".csv.gz");
    }

    #[test]
    fn local_lake_refuses_keys_that_climb_out() {
        let lake = LocalLake::new("/tmp/x");
        assert!(lake.path("../etc/passwd").is_err());
        assert!(lake.path("/etc/passwd").is_err());
        assert!(lake.path("processed/a/../../b").is_err());
        assert!(lake.path("processed/a/b.parquet").is_ok());
    }

    fn tempdir() -> Result<tempfile::TempDir, LakeError> {
        tempfile::tempdir().map_err(|source| LakeError::Io {
            key: String::new(),
            source,
        })
    }

    #[test]
    fn local_lake_writes_lists_and_deletes() -> Result<(), LakeError> {
        let dir = tempdir()?;
        let lake = LocalLake::new(dir.path());
        lake.put(
            "processed/clientes/year=2025/month=01/day=02/a-1.parquet",
            b"x",
        )?;
        lake.put(
            "processed/clientes/year=2025/month=01/day=02/a-2.parquet",
            b"y",
        )?;
        lake.put(
            "processed/clientes/year=2025/month=01/day=02/b-1.parquet",
            b"z",
        )?;
        let listed = lake.list("processed/clientes/year=2025/month=01/day=02/a-")?;
        assert_eq!(listed.len(), 2);
        lake.delete(&listed[0])?;
        assert_eq!(lake.list("processed/clientes/")?.len(), 2);
        Ok(())
    }

    #[test]
    fn local_lake_renames_over_what_is_there_and_stays_inside_its_root() -> Result<(), LakeError> {
        let dir = tempdir()?;
        let lake = LocalLake::new(dir.path());
        lake.put("processed/c/_a-1.parquet", b"new")?;
        lake.put("processed/c/a-2.parquet", b"old")?;
        lake.rename("processed/c/_a-1.parquet", "processed/c/a-2.parquet")?;
        assert_eq!(lake.list("processed/c/")?, vec!["processed/c/a-2.parquet"]);
        let body = fs::read(dir.path().join("processed/c/a-2.parquet"));
        assert_eq!(body.ok().as_deref(), Some(&b"new"[..]));
        lake.rename("processed/c/a-2.parquet", "rejected/c/a.csv")?;
        assert_eq!(lake.list("rejected/")?, vec!["rejected/c/a.csv"]);
        assert!(matches!(
            lake.rename("rejected/c/a.csv", "../outside.csv"),
            Err(LakeError::InvalidKey(_))
        ));
        assert!(matches!(
            lake.rename("rejected/c/missing.csv", "rejected/c/b.csv"),
            Err(LakeError::Io { .. })
        ));
        Ok(())
    }
}
