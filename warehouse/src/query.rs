//! Query results as a small owned table: printed aligned for people, or as JSON rows.

use std::fmt;

use duckdb::arrow::array::{make_array, Array, ArrayRef};
use duckdb::arrow::datatypes::DataType;
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};
use duckdb::Connection;
use serde_json::{Map, Value};

use crate::WarehouseError;

/// One value of a result. Decimals stay text so that no digit is lost on the way to JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// Numbers that are not 64-bit integers or floats (DECIMAL, HUGEINT), as DuckDB prints them.
    Decimal(String),
    Text(String),
}

impl Cell {
    fn to_json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Int(i) => Value::from(*i),
            Cell::UInt(u) => Value::from(*u),
            Cell::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(f.to_string())),
            Cell::Decimal(s) | Cell::Text(s) => Value::String(s.clone()),
        }
    }

    fn is_numeric(&self) -> bool {
        matches!(
            self,
            Cell::Int(_) | Cell::UInt(_) | Cell::Float(_) | Cell::Decimal(_)
        )
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Null => f.write_str("NULL"),
            Cell::Bool(b) => write!(f, "{b}"),
            Cell::Int(i) => write!(f, "{i}"),
            Cell::UInt(u) => write!(f, "{u}"),
            Cell::Float(x) => write!(f, "{x}"),
            Cell::Decimal(s) | Cell::Text(s) => f.write_str(s),
        }
    }
}

/// The columns and rows of a query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl QueryResult {
    /// Rows as JSON objects keyed by column name (a repeated name keeps its last value).
    pub fn json_rows(&self) -> Vec<Value> {
        self.rows
            .iter()
            .map(|row| {
                let mut obj = Map::new();
                for (c, v) in self.columns.iter().zip(row) {
                    obj.insert(c.clone(), v.to_json());
                }
                Value::Object(obj)
            })
            .collect()
    }
}

/// An aligned text table: numbers right-aligned, text left-aligned, and the row count.
impl fmt::Display for QueryResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect();
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &text {
            for (w, v) in widths.iter_mut().zip(row) {
                *w = (*w).max(v.chars().count());
            }
        }
        let numeric: Vec<bool> = (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .any(|r| r.get(i).is_some_and(Cell::is_numeric))
            })
            .collect();
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            let mut out = Vec::with_capacity(cells.len());
            for (i, v) in cells.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                let pad = " ".repeat(w.saturating_sub(v.chars().count()));
                out.push(if numeric.get(i).copied().unwrap_or(false) {
                    format!("{pad}{v}")
                } else {
                    format!("{v}{pad}")
                });
            }
            writeln!(f, "{}", out.join("  ").trim_end())
        };
        line(f, &self.columns)?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        writeln!(f, "{}", rule.join("  "))?;
        for row in &text {
            line(f, row)?;
        }
        let n = self.rows.len();
        write!(f, "({n} row{})", if n == 1 { "" } else { "s" })
    }
}

pub(crate) fn run(conn: &Connection, sql: &str) -> Result<QueryResult, WarehouseError> {
    let mut stmt = conn.prepare(sql)?;
    let batches: Vec<RecordBatch> = stmt.query_arrow([])?.collect();
    let mut result = QueryResult {
        columns: stmt.column_names(),
        rows: Vec::new(),
    };
    let options = FormatOptions::default().with_null("NULL");
    for batch in &batches {
        let arrays: Vec<ArrayRef> = batch.columns().iter().map(displayable).collect();
        let mut columns = Vec::with_capacity(arrays.len());
        for array in &arrays {
            let formatter = ArrayFormatter::try_new(array.as_ref(), &options)?;
            columns.push((array, formatter));
        }
        for row in 0..batch.num_rows() {
            let cells = columns
                .iter()
                .map(|(array, fmt)| cell(array.as_ref(), fmt, row))
                .collect();
            result.rows.push(cells);
        }
    }
    Ok(result)
}

/// DuckDB hands TIMESTAMPTZ over tagged with the zone name `UTC`, which arrow can only print
/// with a time-zone database; the same instants tagged `+00:00` print without one.
fn displayable(array: &ArrayRef) -> ArrayRef {
    match array.data_type() {
        DataType::Timestamp(unit, Some(tz)) if tz.eq_ignore_ascii_case("utc") => {
            let retagged = array
                .to_data()
                .into_builder()
                .data_type(DataType::Timestamp(*unit, Some("+00:00".into())))
                .build();
            retagged.map_or_else(|_| array.clone(), make_array)
        }
        _ => array.clone(),
    }
}

fn cell(array: &dyn Array, fmt: &ArrayFormatter<'_>, row: usize) -> Cell {
    if array.is_null(row) {
        return Cell::Null;
    }
    let text = fmt.value(row).to_string();
    match array.data_type() {
        DataType::Boolean => Cell::Bool(text == "true"),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            text.parse().map_or(Cell::Decimal(text), Cell::Int)
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            text.parse().map_or(Cell::Decimal(text), Cell::UInt)
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            text.parse().map_or(Cell::Decimal(text), Cell::Float)
        }
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => Cell::Decimal(text),
        _ => Cell::Text(text),
    }
}
