//! Finding what to load in a local lake: the manifests under `manifests/<dataset>/…`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use lago::contract::Dataset;
use lago::lake::Zone;
use lago::transform::{Manifest, Status};

use crate::WarehouseError;

/// Why a manifest is not loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The whole file was rejected.
    Rejected,
    /// The file had no accepted row.
    NoRows,
    /// The same source key was transformed again later (another version of the object):
    /// only the latest is loaded, so the warehouse holds what the lake holds now.
    Superseded,
}

/// A manifest that is not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skip {
    pub dataset: Dataset,
    pub source_key: String,
    pub manifest: PathBuf,
    pub reason: SkipReason,
}

/// The manifests of a lake, split into what to load (in load order) and what not.
#[derive(Debug, Clone, Default)]
pub struct ManifestScan {
    pub to_load: Vec<Manifest>,
    pub skipped: Vec<Skip>,
}

/// Reads every `*.json` under `<lake>/manifests/<dataset>/` for `datasets`.
///
/// The order is by load date, then by when the file was transformed, then by source key: a
/// deterministic order where a newer file is applied after an older one.
pub fn scan_manifests(
    lake_dir: &Path,
    datasets: &[Dataset],
) -> Result<ManifestScan, WarehouseError> {
    let root = lake_dir.join(Zone::Manifests.prefix());
    if !root.is_dir() {
        return Err(WarehouseError::NotALake(lake_dir.to_path_buf()));
    }
    let mut found = Vec::new();
    for d in datasets {
        let dir = root.join(d.name());
        if dir.is_dir() {
            collect_json(&dir, &mut found)?;
        }
    }
    found.sort();

    let mut scan = ManifestScan::default();
    // Latest manifest per (dataset, source key).
    let mut latest: BTreeMap<(Dataset, String), (Manifest, PathBuf)> = BTreeMap::new();
    for path in found {
        let bytes = fs::read(&path).map_err(|source| WarehouseError::Io {
            path: path.clone(),
            source,
        })?;
        let m: Manifest =
            serde_json::from_slice(&bytes).map_err(|source| WarehouseError::Manifest {
                path: path.clone(),
                source,
            })?;
        if !datasets.contains(&m.dataset) {
            continue;
        }
        let id = (m.dataset, m.source.key.clone());
        match latest.remove(&id) {
            Some((old, old_path)) if newer(&old, &old_path, &m, &path) => {
                scan.skipped.push(skip(&m, path, SkipReason::Superseded));
                latest.insert(id, (old, old_path));
            }
            Some((old, old_path)) => {
                scan.skipped
                    .push(skip(&old, old_path, SkipReason::Superseded));
                latest.insert(id, (m, path));
            }
            None => {
                latest.insert(id, (m, path));
            }
        }
    }
    for (m, path) in latest.into_values() {
        if m.status != Status::Ok {
            scan.skipped.push(skip(&m, path, SkipReason::Rejected));
        } else if m.rows_ok == 0 || m.outputs.processed.is_empty() {
            scan.skipped.push(skip(&m, path, SkipReason::NoRows));
        } else {
            scan.to_load.push(m);
        }
    }
    scan.to_load.sort_by(|a, b| {
        (a.load_date, &a.started_at, &a.source.key).cmp(&(
            b.load_date,
            &b.started_at,
            &b.source.key,
        ))
    });
    scan.skipped.sort_by(|a, b| a.manifest.cmp(&b.manifest));
    Ok(scan)
}

/// Whether `a` was transformed after `b` (ties broken by manifest path, to stay deterministic).
fn newer(a: &Manifest, a_path: &Path, b: &Manifest, b_path: &Path) -> bool {
    (&a.started_at, a_path) > (&b.started_at, b_path)
}

fn skip(m: &Manifest, path: PathBuf, reason: SkipReason) -> Skip {
    Skip {
        dataset: m.dataset,
        source_key: m.source.key.clone(),
        manifest: path,
        reason,
    }
}

fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), WarehouseError> {
    let io = |source| WarehouseError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            collect_json(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}
