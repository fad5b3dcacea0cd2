//! The processed zone's catalog: the local twin of the Glue catalog (tables, their columns from
//! the contracts, the partitions found on disk), and the partitions the transform registers in
//! Glue itself ([`PartitionCatalog`]) — the data is queryable as soon as it is written, with no
//! crawler on the way.

use std::fs;
use std::io;
use std::path::Path;

use std::future::Future;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

use crate::contract::Dataset;
use crate::lake::{partition_prefix, Zone};

/// The Parquet storage every processed table and partition is declared with (the template's
/// tables use the same).
pub const PARQUET_INPUT_FORMAT: &str =
    "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat";
pub const PARQUET_OUTPUT_FORMAT: &str =
    "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat";
pub const PARQUET_SERDE: &str = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe";

/// One partition of a processed table: `year`, `month`, `day` of the load date, and where its
/// Parquet lies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionSpec {
    pub dataset: Dataset,
    /// `[year, month, day]` as the folder names write them (`2025`, `05`, `10`).
    pub values: [String; 3],
    /// `s3://<bucket>/processed/<dataset>/year=…/month=…/day=…/`.
    pub location: String,
    /// The table's columns (name, Glue type), from the contract, in the Parquet order.
    pub columns: Vec<(String, String)>,
}

impl PartitionSpec {
    /// The partition of `dataset` for files loaded on `load_date`, in the lake `bucket`.
    pub fn processed(dataset: Dataset, bucket: &str, load_date: NaiveDate) -> PartitionSpec {
        PartitionSpec {
            dataset,
            values: [
                format!("{:04}", load_date.year()),
                format!("{:02}", load_date.month()),
                format!("{:02}", load_date.day()),
            ],
            location: format!(
                "s3://{bucket}/{}",
                partition_prefix(Zone::Processed, dataset, load_date)
            ),
            columns: dataset
                .contract()
                .output_columns()
                .into_iter()
                .map(|c| (c.name, c.ty.hive()))
                .collect(),
        }
    }
}

/// The Glue table of a processed dataset, generated from its contract in the shape of
/// CloudFormation's `TableInput` — what `template.yaml` declares for it (a test holds the
/// template to this): an external Parquet table partitioned by the load date's `year`, `month`
/// and `day`, the contract's output columns in the Parquet order with their Hive types, the
/// PII-derived ones commented as such (the analysts' grant leaves them out). `Location` is the
/// template's `!Sub` text, with `${LakeBucket}` left for CloudFormation.
pub fn table_input(dataset: Dataset) -> serde_json::Value {
    let columns: Vec<serde_json::Value> = dataset
        .contract()
        .output_columns()
        .into_iter()
        .map(|c| {
            let mut col = serde_json::json!({"Name": c.name, "Type": c.ty.hive()});
            if c.pii {
                let what = if c.name.ends_with("_hash") {
                    "PII-derived: hex SHA-256 of salt + value"
                } else {
                    "PII-derived: masked address"
                };
                col["Comment"] = what.into();
            }
            col
        })
        .collect();
    let partition_keys: Vec<serde_json::Value> = PARTITION_KEYS
        .iter()
        .map(|k| serde_json::json!({"Name": k, "Type": "string"}))
        .collect();
    serde_json::json!({
        "Name": dataset.name(),
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": "parquet", "EXTERNAL": "TRUE"},
        "PartitionKeys": partition_keys,
        "StorageDescriptor": {
            "Location": format!("s3://${{LakeBucket}}/processed/{}/", dataset.name()),
            "InputFormat": PARQUET_INPUT_FORMAT,
            "OutputFormat": PARQUET_OUTPUT_FORMAT,
            "SerdeInfo": {
                "SerializationLibrary": PARQUET_SERDE,
                "Parameters": {"serialization.format": "1"},
            },
            "Columns": columns,
        },
    })
}

/// The partition keys of every processed table, from the load date.
pub const PARTITION_KEYS: [&str; 3] = ["year", "month", "day"];

/// What registering partitions did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Registered {
    pub created: u32,
    /// Registered before (an earlier file of the same day, a retry): not an error.
    pub existed: u32,
}

/// Why partitions could not be registered.
#[derive(Debug, thiserror::Error)]
#[error("registering partitions of {table} in {database} failed ({code})")]
pub struct CatalogError {
    pub database: String,
    pub table: String,
    pub code: String,
    /// Throttling, 5xx, time-outs: a retry may pass.
    pub transient: bool,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// The catalog the transform registers the partitions it wrote in: Glue in AWS.
pub trait PartitionCatalog: Send + Sync {
    /// Registers `partitions` (of one table) in `database`; a partition that exists already is
    /// counted, not an error.
    fn register(
        &self,
        database: &str,
        partitions: &[PartitionSpec],
    ) -> impl Future<Output = Result<Registered, CatalogError>> + Send;
}

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
            partition_keys: PARTITION_KEYS.iter().map(|k| k.to_string()).collect(),
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

/// The catalog in memory, for tests: partitions by (database, table, values).
#[cfg(any(test, feature = "local"))]
#[derive(Debug, Default)]
pub struct MemoryPartitions {
    partitions: std::sync::Mutex<std::collections::BTreeMap<PartitionKey, String>>,
}

/// (database, table, values) of a partition in [`MemoryPartitions`].
#[cfg(any(test, feature = "local"))]
type PartitionKey = (String, String, [String; 3]);

#[cfg(any(test, feature = "local"))]
impl MemoryPartitions {
    /// `(database, table, values, location)` of every partition registered.
    pub fn partitions(&self) -> Vec<(String, String, [String; 3], String)> {
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((d, t, v), l)| (d.clone(), t.clone(), v.clone(), l.clone()))
            .collect()
    }
}

#[cfg(any(test, feature = "local"))]
impl PartitionCatalog for MemoryPartitions {
    async fn register(
        &self,
        database: &str,
        partitions: &[PartitionSpec],
    ) -> Result<Registered, CatalogError> {
        let mut map = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Registered::default();
        for p in partitions {
            let key = (
                database.to_string(),
                p.dataset.name().to_string(),
                p.values.clone(),
            );
            match map.entry(key) {
                std::collections::btree_map::Entry::Occupied(_) => out.existed += 1,
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(p.location.clone());
                    out.created += 1;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_table_is_declared_with_the_columns_its_partitions_are_registered_with() {
        let day = NaiveDate::from_ymd_opt(2025, 5, 10).unwrap_or_default();
        for d in Dataset::ALL {
            let table = table_input(d);
            assert_eq!(table["Name"], d.name());
            let declared: Vec<(String, String)> = table["StorageDescriptor"]["Columns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    (
                        c["Name"].as_str().unwrap_or_default().to_string(),
                        c["Type"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            assert_eq!(
                declared,
                PartitionSpec::processed(d, "b", day).columns,
                "{d:?}"
            );
            let parquet: Vec<String> = d
                .contract()
                .arrow_schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            let names: Vec<String> = declared.into_iter().map(|c| c.0).collect();
            assert_eq!(names, parquet, "{d:?}: the Parquet's columns, in its order");
            assert_eq!(
                table["StorageDescriptor"]["Location"],
                format!("s3://${{LakeBucket}}/processed/{}/", d.name())
            );
            assert_eq!(table["PartitionKeys"].as_array().map(Vec::len), Some(3));
        }
        let clientes = table_input(Dataset::Clientes);
        let commented: Vec<&str> = clientes["StorageDescriptor"]["Columns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c.get("Comment").is_some())
            .filter_map(|c| c["Name"].as_str())
            .collect();
        assert_eq!(commented, ["numero_identificacion_hash", "email_masked"]);
    }

    #[test]
    fn a_processed_partition_is_where_the_transform_writes_with_the_contracts_columns() {
        let day = NaiveDate::from_ymd_opt(2025, 5, 10).unwrap_or_default();
        let p = PartitionSpec::processed(Dataset::Clientes, "lago-lake", day);
        assert_eq!(p.values, ["2025".to_string(), "05".into(), "10".into()]);
        assert_eq!(
            p.location,
            "s3://lago-lake/processed/clientes/year=2025/month=05/day=10/"
        );
        assert_eq!(p.columns.first().map(|c| c.0.as_str()), Some("id_cliente"));
        assert!(p
            .columns
            .contains(&("_load_date".to_string(), "date".to_string())));
    }

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
