//! What a run hands on: the warehouse loads (whole day folders of the history, then the
//! features) and the Glue partitions of those days, with the columns the Parquet is written with.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use serde::Serialize;

use super::features::USER_FEATURES_KEY;
use super::{day_prefix, row};
use crate::load::{Table, TableLoad};

/// The lake folder of one day of the history's Parquet (`processed/trades/year=…/month=…/day=…/`).
pub fn processed_day(day: NaiveDate) -> String {
    day_prefix("processed", day)
}

/// The loads of a run, as lake keys (`locate` turns one into what the warehouse reads): each of
/// `days` as a whole folder — so parts an interrupted run wrote are loaded too, the load keeping
/// one row per trade — then the features object when `features` is set.
pub fn warehouse_loads(
    days: &BTreeSet<NaiveDate>,
    features: bool,
    locate: impl Fn(&str) -> String,
) -> Vec<TableLoad> {
    let mut loads = Vec::with_capacity(2);
    if !days.is_empty() {
        loads.push(TableLoad {
            table: Table::TradesHistory,
            parts: days.iter().map(|d| locate(&processed_day(*d))).collect(),
        });
    }
    if features {
        loads.push(TableLoad {
            table: Table::UserFeatures,
            parts: vec![locate(USER_FEATURES_KEY)],
        });
    }
    loads
}

/// One partition of Glue's `BatchCreatePartition` (`PartitionInputList` item), in the API's
/// field names so a state machine passes it through as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PartitionInput {
    /// `year`, `month`, `day`, as the folder names spell them.
    pub values: [String; 3],
    pub storage_descriptor: StorageDescriptor,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StorageDescriptor {
    pub location: String,
    pub input_format: &'static str,
    pub output_format: &'static str,
    pub serde_info: SerdeInfo,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SerdeInfo {
    pub serialization_library: &'static str,
    pub parameters: BTreeMap<&'static str, &'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Column {
    pub name: String,
    pub r#type: String,
}

/// The `trades_history` partition of `day`, its folder at `location` (`s3://…/`).
pub fn partition_input(day: NaiveDate, location: String) -> PartitionInput {
    PartitionInput {
        values: [
            day.format("%Y").to_string(),
            day.format("%m").to_string(),
            day.format("%d").to_string(),
        ],
        storage_descriptor: StorageDescriptor {
            location,
            input_format: "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            output_format: "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            serde_info: SerdeInfo {
                serialization_library:
                    "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                parameters: BTreeMap::from([("serialization.format", "1")]),
            },
            columns: row::columns()
                .iter()
                .map(|c| Column {
                    name: c.name.clone(),
                    r#type: c.ty.hive(),
                })
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    #[test]
    fn a_run_loads_whole_days_then_the_features() {
        let days = BTreeSet::from([day("2026-12-07"), day("2026-12-06")]);
        let loads = warehouse_loads(&days, true, |k| format!("s3://lake/{k}"));
        assert_eq!(
            loads,
            vec![
                TableLoad {
                    table: Table::TradesHistory,
                    parts: vec![
                        "s3://lake/processed/trades/year=2026/month=12/day=06/".into(),
                        "s3://lake/processed/trades/year=2026/month=12/day=07/".into(),
                    ],
                },
                TableLoad {
                    table: Table::UserFeatures,
                    parts: vec![format!("s3://lake/{USER_FEATURES_KEY}")],
                },
            ]
        );
        // Every folder is under the table's own prefix (what the loader checks).
        assert!(
            processed_day(day("2026-01-02")).starts_with(&Table::TradesHistory.processed_prefix())
        );
        assert!(USER_FEATURES_KEY.starts_with(&Table::UserFeatures.processed_prefix()));
        assert!(warehouse_loads(&BTreeSet::new(), false, str::to_string).is_empty());
    }

    #[test]
    fn a_partition_is_the_days_folder_with_the_parquet_columns() -> Result<(), serde_json::Error> {
        let p = partition_input(
            day("2026-01-02"),
            "s3://lake/processed/trades/year=2026/month=01/day=02/".into(),
        );
        let json = serde_json::to_value(&p)?;
        assert_eq!(json["Values"], serde_json::json!(["2026", "01", "02"]));
        let sd = &json["StorageDescriptor"];
        assert_eq!(
            sd["Location"],
            "s3://lake/processed/trades/year=2026/month=01/day=02/"
        );
        assert_eq!(sd["SerdeInfo"]["Parameters"]["serialization.format"], "1");
        let columns = sd["Columns"].as_array().map(Vec::len);
        assert_eq!(columns, Some(row::columns().len()));
        assert_eq!(
            sd["Columns"][0],
            serde_json::json!({"Name": "trade_id", "Type": "string"})
        );
        Ok(())
    }
}
