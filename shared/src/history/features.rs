//! Model features from the trade history: one row per user and day, and the training set of
//! SageMaker's built-in XGBoost (CSV, no header, the label first).
//!
//! From the applied trades of `processed/trades/` (each trade id once), per user, replayed in
//! stream order through the same [`Portfolio`] the stream keeps, every day from the user's
//! first trade to the last day of the history (days in America/Bogota), as of the end of the day:
//!
//! | column | |
//! | --- | --- |
//! | `trades_7d`, `trades_30d` | applied trades in the 7 / 30 days ending that day |
//! | `cop_notional_7d`, `cop_notional_30d` | their COP notional |
//! | `buy_ratio_30d` | buys ÷ trades over 30 days, 4 places (0 without trades) |
//! | `avg_ticket_cop_30d` | COP notional ÷ trades over 30 days, 2 places (0 without trades) |
//! | `net_usd_position` | the USD balance after the day's trades |
//! | `realized_pnl_cop` | realized P&L to date (average-cost method) |
//! | `days_since_last_trade` | 0 on a day with a trade |
//! | `label_buy_next_7d` | 1 if the user bought in the 7 days after the day, 0 if not; null while those days are not all in the history |
//!
//! Divisions round half away from zero. The training set holds the rows with a label.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, OnceLock};

use arrow_array::builder::{Date32Builder, Decimal128Builder, Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Decimal128Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use chrono::{DateTime, NaiveDate};
use parquet::arrow::ArrowWriter;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::contract::{OutColumn, OutType};
use crate::lake::{LakeRead, LakeStore};
use crate::parse::{date_from_days, days_since_epoch};
use crate::trades::{Portfolio, Side, Trade};
use crate::transform::OutputObject;

use super::HistoryError;

/// Where the features go (replaced whole by every run).
pub const USER_FEATURES_KEY: &str = "processed/features/user_features/user_features.parquet";
pub const TRAINING_SET_KEY: &str = "processed/features/training/train.csv";
/// The training set's columns, in order, for whoever serves the model.
pub const TRAINING_COLUMNS_KEY: &str = "processed/features/training/columns.json";

/// (precision, scale) of the money columns.
const COP: (u8, u8) = (22, 2);
const USD: (u8, u8) = (16, 2);
const RATIO: (u8, u8) = (5, 4);

/// The feature table's columns, in Parquet (and warehouse) order.
pub fn columns() -> &'static [OutColumn] {
    static COLUMNS: OnceLock<Vec<OutColumn>> = OnceLock::new();
    COLUMNS.get_or_init(|| {
        let col = |name: &str, ty: OutType, nullable: bool| OutColumn {
            name: name.to_string(),
            ty,
            nullable,
            pii: false,
            free_text: false,
        };
        let dec = |(p, s): (u8, u8)| OutType::Decimal(p, s);
        vec![
            col("user_id", OutType::Text, false),
            col("feature_date", OutType::Date, false),
            col("trades_7d", OutType::Int64, false),
            col("trades_30d", OutType::Int64, false),
            col("cop_notional_7d", dec(COP), false),
            col("cop_notional_30d", dec(COP), false),
            col("buy_ratio_30d", dec(RATIO), false),
            col("avg_ticket_cop_30d", dec(COP), false),
            col("net_usd_position", dec(USD), false),
            col("realized_pnl_cop", dec(COP), false),
            col("days_since_last_trade", OutType::Int64, false),
            col("label_buy_next_7d", OutType::Int64, true),
        ]
    })
}

fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| super::arrow_schema(columns()))
        .clone()
}

/// One applied trade, as the features need it.
#[derive(Debug, Clone)]
pub struct FeatureTrade {
    pub trade: Trade,
    pub sequence_number: String,
    /// `local_date` (America/Bogota).
    pub day: NaiveDate,
    pub cop_notional: Decimal,
}

/// One row of `user_features`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureRow {
    pub user_id: Arc<str>,
    pub day: NaiveDate,
    pub trades_7d: u64,
    pub trades_30d: u64,
    pub cop_notional_7d: Decimal,
    pub cop_notional_30d: Decimal,
    pub buy_ratio_30d: Decimal,
    pub avg_ticket_cop_30d: Decimal,
    pub net_usd_position: Decimal,
    pub realized_pnl_cop: Decimal,
    pub days_since_last_trade: u64,
    pub label_buy_next_7d: Option<bool>,
}

/// What a features run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FeaturesReport {
    /// Applied trades read (each trade id once).
    pub trades: u64,
    pub users: u64,
    pub rows: u64,
    /// Rows with a label: the training set.
    pub training_rows: u64,
    /// Applied trades the portfolio replay refused (a sell above the balance: the archive
    /// lacks an earlier buy of the user). Counted, not used.
    pub not_replayable: u64,
    pub last_day: Option<NaiveDate>,
    pub outputs: Vec<OutputObject>,
    pub duration_ms: u64,
}

/// The features of `trades` (applied trades, any order): rows sorted by user, then day.
pub fn user_features(trades: &[FeatureTrade]) -> (Vec<FeatureRow>, u64) {
    let Some(last_day) = trades.iter().map(|t| t.day).max() else {
        return (Vec::new(), 0);
    };
    let last = days_since_epoch(last_day);
    let mut by_user: BTreeMap<&str, Vec<&FeatureTrade>> = BTreeMap::new();
    for t in trades {
        by_user.entry(&*t.trade.user_id).or_default().push(t);
    }
    let mut rows = Vec::new();
    let mut not_replayable = 0;
    for (user, mut list) in by_user {
        // Stream order: Kinesis sequence numbers are decimal strings (shorter = earlier).
        list.sort_by(|a, b| {
            (
                a.sequence_number.len(),
                &a.sequence_number,
                a.trade.executed_at,
            )
                .cmp(&(
                    b.sequence_number.len(),
                    &b.sequence_number,
                    b.trade.executed_at,
                ))
        });
        // Per day: trades, buys, COP notional, and the portfolio after the day.
        let mut portfolio = Portfolio::new(user);
        let mut days: BTreeMap<i32, DayTotals> = BTreeMap::new();
        for t in &list {
            let d = days_since_epoch(t.day);
            let totals = days.entry(d).or_default();
            if portfolio.apply(&t.trade).is_err() {
                not_replayable += 1;
                continue;
            }
            totals.trades += 1;
            totals.buys += u64::from(t.trade.side == Side::Buy);
            totals.cop += t.cop_notional;
            totals.usd = portfolio.usd_balance;
            totals.realized = portfolio.realized_pnl_cop;
        }
        days.retain(|_, t| t.trades > 0);
        let Some((&first, _)) = days.iter().next() else {
            continue;
        };
        let user_id: Arc<str> = Arc::from(user);
        let (mut usd, mut realized, mut last_trade) = (Decimal::ZERO, Decimal::ZERO, first);
        for d in first..=last {
            if let Some(t) = days.get(&d) {
                usd = t.usd;
                realized = t.realized;
                last_trade = d;
            }
            let window = |n: i32| {
                days.range(d - n + 1..=d)
                    .fold(DayTotals::default(), |acc, (_, t)| acc.plus(t))
            };
            let (w7, w30) = (window(7), window(30));
            let label = (d + 7 <= last).then(|| days.range(d + 1..=d + 7).any(|(_, t)| t.buys > 0));
            let Some(day) = date_from_days(d) else {
                continue;
            };
            rows.push(FeatureRow {
                user_id: Arc::clone(&user_id),
                day,
                trades_7d: w7.trades,
                trades_30d: w30.trades,
                cop_notional_7d: w7.cop,
                cop_notional_30d: w30.cop,
                buy_ratio_30d: ratio(Decimal::from(w30.buys), w30.trades, RATIO.1),
                avg_ticket_cop_30d: ratio(w30.cop, w30.trades, COP.1),
                net_usd_position: usd,
                realized_pnl_cop: realized,
                days_since_last_trade: u64::try_from(d - last_trade).unwrap_or(0),
                label_buy_next_7d: label,
            });
        }
    }
    (rows, not_replayable)
}

#[derive(Debug, Clone, Copy, Default)]
struct DayTotals {
    trades: u64,
    buys: u64,
    cop: Decimal,
    usd: Decimal,
    realized: Decimal,
}

impl DayTotals {
    fn plus(self, o: &DayTotals) -> DayTotals {
        DayTotals {
            trades: self.trades + o.trades,
            buys: self.buys + o.buys,
            cop: self.cop + o.cop,
            ..self
        }
    }
}

/// `num / den` to `scale` places, half away from zero; 0 when `den` is 0.
fn ratio(num: Decimal, den: u64, scale: u8) -> Decimal {
    if den == 0 {
        return Decimal::ZERO;
    }
    (num / Decimal::from(den))
        .round_dp_with_strategy(u32::from(scale), RoundingStrategy::MidpointAwayFromZero)
}

/// The applied trades of the lake's `processed/trades/`, each trade id once.
pub fn read_applied<L: LakeStore + LakeRead + ?Sized>(
    lake: &L,
) -> Result<Vec<FeatureTrade>, HistoryError> {
    let mut keys = lake.list("processed/trades/")?;
    keys.retain(|k| k.ends_with(".parquet"));
    keys.sort();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    const WANTED: [&str; 10] = [
        "trade_id",
        "user_id",
        "side",
        "usd_amount",
        "rate",
        "executed_at",
        "status",
        "sequence_number",
        "cop_notional",
        "local_date",
    ];
    for key in &keys {
        for batch in super::read_columns(lake, key, &WANTED)? {
            read_batch(&batch, &mut seen, &mut out).map_err(|detail| HistoryError::Unreadable {
                key: key.clone(),
                detail,
            })?;
        }
    }
    Ok(out)
}

fn read_batch(
    batch: &RecordBatch,
    seen: &mut std::collections::HashSet<u128>,
    out: &mut Vec<FeatureTrade>,
) -> Result<(), String> {
    let col = |n: &str| {
        batch
            .column_by_name(n)
            .cloned()
            .ok_or_else(|| format!("no column {n}"))
    };
    let text = |n: &str| -> Result<arrow_array::StringArray, String> {
        Ok(col(n)?
            .as_string_opt::<i32>()
            .ok_or(format!("{n} is not text"))?
            .clone())
    };
    let dec = |n: &str| -> Result<arrow_array::Decimal128Array, String> {
        Ok(col(n)?
            .as_primitive_opt::<Decimal128Type>()
            .ok_or(format!("{n} is not a decimal"))?
            .clone())
    };
    let (ids, users, sides, statuses, seqs) = (
        text("trade_id")?,
        text("user_id")?,
        text("side")?,
        text("status")?,
        text("sequence_number")?,
    );
    let (usd, rate, cop) = (dec("usd_amount")?, dec("rate")?, dec("cop_notional")?);
    let executed = col("executed_at")?;
    let executed = executed
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or("executed_at is not a timestamp")?;
    let days = col("local_date")?;
    let days = days
        .as_primitive_opt::<Date32Type>()
        .ok_or("local_date is not a date")?;
    let decimal = |a: &arrow_array::Decimal128Array, i: usize| {
        Decimal::try_from_i128_with_scale(a.value(i), a.scale().max(0) as u32)
            .map_err(|e| e.to_string())
    };
    for i in 0..batch.num_rows() {
        if statuses.is_null(i) || statuses.value(i) != "applied" {
            continue;
        }
        if !seen.insert(xxhash_rust::xxh3::xxh3_128(ids.value(i).as_bytes())) {
            continue;
        }
        let side = match sides.value(i) {
            "BUY" => Side::Buy,
            "SELL" => Side::Sell,
            other => return Err(format!("unknown side {other:?}")),
        };
        let executed_at =
            DateTime::from_timestamp_micros(executed.value(i)).ok_or("executed_at out of range")?;
        let day = date_from_days(days.value(i)).ok_or("local_date out of range")?;
        out.push(FeatureTrade {
            trade: Trade {
                trade_id: Arc::from(ids.value(i)),
                user_id: Arc::from(users.value(i)),
                side,
                usd_amount: decimal(&usd, i)?,
                rate: decimal(&rate, i)?,
                executed_at,
                channel: None,
            },
            sequence_number: seqs.value(i).to_string(),
            day,
            cop_notional: decimal(&cop, i)?,
        });
    }
    Ok(())
}

/// Rebuilds the features and the training set from the lake's trade history.
pub fn run<L: LakeStore + LakeRead + ?Sized>(lake: &L) -> Result<FeaturesReport, HistoryError> {
    let started = std::time::Instant::now();
    let trades = read_applied(lake)?;
    let (rows, not_replayable) = user_features(&trades);
    let mut report = FeaturesReport {
        trades: trades.len() as u64,
        users: rows
            .iter()
            .map(|r| &r.user_id)
            .collect::<std::collections::HashSet<_>>()
            .len() as u64,
        rows: rows.len() as u64,
        not_replayable,
        last_day: trades.iter().map(|t| t.day).max(),
        ..FeaturesReport::default()
    };
    report.outputs.push(write_parquet(lake, &rows)?);
    let (training, training_rows) = write_training_set(lake, &rows)?;
    report.training_rows = training_rows;
    report.outputs.push(training);
    let names: Vec<&str> = std::iter::once("label_buy_next_7d")
        .chain(TRAINING_FEATURES.iter().copied())
        .collect();
    let bytes = lake.put(TRAINING_COLUMNS_KEY, &serde_json::to_vec_pretty(&names)?)?;
    report.outputs.push(OutputObject {
        key: TRAINING_COLUMNS_KEY.into(),
        rows: names.len() as u64,
        bytes,
    });
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// The training set's feature columns, after the label.
pub const TRAINING_FEATURES: [&str; 9] = [
    "trades_7d",
    "trades_30d",
    "cop_notional_7d",
    "cop_notional_30d",
    "buy_ratio_30d",
    "avg_ticket_cop_30d",
    "net_usd_position",
    "realized_pnl_cop",
    "days_since_last_trade",
];

/// One training line: label, then [`TRAINING_FEATURES`]; `None` for a row without a label.
pub fn training_line(r: &FeatureRow) -> Option<String> {
    let label = r.label_buy_next_7d?;
    // Every value at its column's scale, so a line reads the same whatever the arithmetic left.
    let fixed = |v: Decimal, scale: u8| {
        let mut v = v;
        v.rescale(u32::from(scale));
        v
    };
    Some(format!(
        "{},{},{},{},{},{},{},{},{},{}",
        u8::from(label),
        r.trades_7d,
        r.trades_30d,
        fixed(r.cop_notional_7d, COP.1),
        fixed(r.cop_notional_30d, COP.1),
        fixed(r.buy_ratio_30d, RATIO.1),
        fixed(r.avg_ticket_cop_30d, COP.1),
        fixed(r.net_usd_position, USD.1),
        fixed(r.realized_pnl_cop, COP.1),
        r.days_since_last_trade,
    ))
}

fn write_training_set<L: LakeStore + ?Sized>(
    lake: &L,
    rows: &[FeatureRow],
) -> Result<(OutputObject, u64), HistoryError> {
    let mut sink = lake.create(TRAINING_SET_KEY)?;
    let mut n = 0u64;
    let io = |source| HistoryError::Read {
        key: TRAINING_SET_KEY.into(),
        source,
    };
    for line in rows.iter().filter_map(training_line) {
        sink.write_all(line.as_bytes()).map_err(io)?;
        sink.write_all(b"\n").map_err(io)?;
        n += 1;
    }
    let bytes = sink.finish()?;
    Ok((
        OutputObject {
            key: TRAINING_SET_KEY.into(),
            rows: n,
            bytes,
        },
        n,
    ))
}

fn write_parquet<L: LakeStore + ?Sized>(
    lake: &L,
    rows: &[FeatureRow],
) -> Result<OutputObject, HistoryError> {
    let parquet_err = |source| HistoryError::Parquet {
        key: USER_FEATURES_KEY.into(),
        source,
    };
    let sink = lake.create(USER_FEATURES_KEY)?;
    let mut writer = ArrowWriter::try_new(sink, schema(), Some(super::writer_properties()))
        .map_err(parquet_err)?;
    for chunk in rows.chunks(super::BATCH_ROWS) {
        let batch = feature_batch(chunk).map_err(|source| HistoryError::Arrow {
            key: USER_FEATURES_KEY.into(),
            source,
        })?;
        writer.write(&batch).map_err(parquet_err)?;
    }
    let bytes = writer.into_inner().map_err(parquet_err)?.finish()?;
    Ok(OutputObject {
        key: USER_FEATURES_KEY.into(),
        rows: rows.len() as u64,
        bytes,
    })
}

fn feature_batch(rows: &[FeatureRow]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let n = rows.len();
    let mut user = StringBuilder::with_capacity(n, n * 12);
    let mut day = Date32Builder::with_capacity(n);
    let ints = || Int64Builder::with_capacity(n);
    let (mut t7, mut t30, mut since, mut label) = (ints(), ints(), ints(), ints());
    let decs = || Decimal128Builder::with_capacity(n);
    let (mut c7, mut c30, mut ratio_b, mut ticket, mut usd, mut pnl) =
        (decs(), decs(), decs(), decs(), decs(), decs());
    let mantissa = |v: Decimal, scale: u8| {
        let mut v = v;
        v.rescale(u32::from(scale));
        v.mantissa()
    };
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for r in rows {
        user.append_value(&*r.user_id);
        day.append_value(days_since_epoch(r.day));
        t7.append_value(int(r.trades_7d));
        t30.append_value(int(r.trades_30d));
        c7.append_value(mantissa(r.cop_notional_7d, COP.1));
        c30.append_value(mantissa(r.cop_notional_30d, COP.1));
        ratio_b.append_value(mantissa(r.buy_ratio_30d, RATIO.1));
        ticket.append_value(mantissa(r.avg_ticket_cop_30d, COP.1));
        usd.append_value(mantissa(r.net_usd_position, USD.1));
        pnl.append_value(mantissa(r.realized_pnl_cop, COP.1));
        since.append_value(int(r.days_since_last_trade));
        label.append_option(r.label_buy_next_7d.map(i64::from));
    }
    let dec = |mut b: Decimal128Builder,
               (p, s): (u8, u8)|
     -> Result<ArrayRef, arrow_schema::ArrowError> {
        Ok(Arc::new(b.finish().with_precision_and_scale(p, s as i8)?) as ArrayRef)
    };
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(user.finish()),
            Arc::new(day.finish()),
            Arc::new(t7.finish()),
            Arc::new(t30.finish()),
            dec(c7, COP)?,
            dec(c30, COP)?,
            dec(ratio_b, RATIO)?,
            dec(ticket, COP)?,
            dec(usd, USD)?,
            dec(pnl, COP)?,
            Arc::new(since.finish()),
            Arc::new(label.finish()),
        ],
    )
}

#[cfg(test)]
mod tests;
