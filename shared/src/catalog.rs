//! The local twin of the Glue crawlers: a catalog of the processed zone's tables, their columns
//! (from the contracts) and the partitions found on disk.

use std::fs;
use std::io;
use std::path::Path;

use serde::Serialize;

use crate::contract::Dataset;
use crate::lake::{partition_prefix, Zone};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogColumn {
    pub name: String,
    /// The Glue / Hive type name.
    pub r#type: String,
    pub nullable: bool,
    /// Derived from PII: analysts are not granted it.
    pub pii: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogPartition {
    pub year: String,
    pub month: String,
    pub day: String,
    pub location: String,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogTable {
    pub database: String,
    pub name: String,
    pub location: String,
    pub format: String,
    pub columns: Vec<CatalogColumn>,
    pub partition_keys: Vec<String>,
    pub partitions: Vec<CatalogPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Catalog {
    pub tables: Vec<CatalogTable>,
}

/// Catalogs `processed/` of the lake folder at `root` (missing datasets have no partitions).
pub fn scan(root: &Path) -> io::Result<Catalog> {
    let mut tables = Vec::new();
    for dataset in Dataset::ALL {
        let base = format!("{}/{}/", Zone::Processed.prefix(), dataset.name());
        let mut partitions = Vec::new();
        for (year, y_path) in children(&root.join(&base), "year=")? {
            for (month, m_path) in children(&y_path, "month=")? {
                for (day, d_path) in children(&m_path, "day=")? {
                    let (mut files, mut bytes) = (0, 0);
                    for e in fs::read_dir(&d_path)?.flatten() {
                        let p = e.path();
                        if p.extension().is_some_and(|x| x == "parquet") {
                            files += 1;
                            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                        }
                    }
                    if files == 0 {
                        continue;
                    }
                    let location = match chrono::NaiveDate::from_ymd_opt(
                        year.parse().unwrap_or(0),
                        month.parse().unwrap_or(0),
                        day.parse().unwrap_or(0),
                    ) {
                        Some(d) => partition_prefix(Zone::Processed, dataset, d),
                        None => continue,
                    };
                    partitions.push(CatalogPartition {
                        year: year.clone(),
                        month: month.clone(),
                        day,
                        location,
                        files,
                        bytes,
                    });
                }
            }
        }
        tables.push(CatalogTable {
            database: "energy_processed_db".into(),
            name: dataset.name().into(),
            location: base,
            format: "parquet".into(),
            columns: dataset
                .contract()
                .output_columns()
                .into_iter()
                .map(|c| CatalogColumn {
                    r#type: c.ty.hive(),
                    name: c.name,
                    nullable: c.nullable,
                    pii: c.pii,
                })
                .collect(),
            partition_keys: vec!["year".into(), "month".into(), "day".into()],
            partitions,
        });
    }
    Ok(Catalog { tables })
}

/// Sub-folders named `<prefix><value>`, sorted, as (value, path).
fn children(dir: &Path, prefix: &str) -> io::Result<Vec<(String, std::path::PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(v) = name.strip_prefix(prefix) {
            if e.path().is_dir() {
                out.push((v.to_string(), e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_come_from_the_folders_that_hold_parquet() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir
            .path()
            .join("processed/clientes/year=2025/month=05/day=10");
        fs::create_dir_all(&p)?;
        fs::write(p.join("a-00000.parquet"), b"1234")?;
        fs::create_dir_all(
            dir.path()
                .join("processed/clientes/year=2025/month=06/day=10"),
        )?;
        let c = scan(dir.path())?;
        let clientes = c.tables.iter().find(|t| t.name == "clientes");
        let parts = clientes.map(|t| t.partitions.clone()).unwrap_or_default();
        assert_eq!(parts.len(), 1);
        assert_eq!(
            parts[0].location,
            "processed/clientes/year=2025/month=05/day=10/"
        );
        assert_eq!((parts[0].files, parts[0].bytes), (1, 4));
        let cols = clientes.map(|t| t.columns.clone()).unwrap_or_default();
        assert!(cols.iter().any(|c| c.name == "email_masked" && c.pii));
        assert_eq!(c.tables.len(), Dataset::ALL.len());
        let trm = c.tables.iter().find(|t| t.name == "trm");
        let types: Vec<(String, String)> = trm
            .map(|t| {
                t.columns
                    .iter()
                    .map(|c| (c.name.clone(), c.r#type.clone()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            types[..4],
            [
                ("valor".into(), "decimal(12,2)".into()),
                ("unidad".into(), "string".into()),
                ("vigenciadesde".into(), "date".into()),
                ("vigenciahasta".into(), "date".into()),
            ]
        );
        Ok(())
    }
}
