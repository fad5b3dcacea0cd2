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
use arrow_array::types::{Date32Type, Decimal128Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use chrono::{DateTime, NaiveDate};
use parquet::arrow::ArrowWriter;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::contract::{OutColumn, OutType};
use crate::lake::{LakeRead, LakeStore, ObjectSink};
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

/// Applied trades in a compact form (users interned, 64 bytes a trade), in stream order: the
/// order of the history's Parquet parts (sorted keys: day, shard, first sequence number) and of
/// their rows, which is the archive's.
#[derive(Debug, Default)]
pub struct AppliedTrades {
    users: Vec<Arc<str>>,
    index: std::collections::HashMap<Arc<str>, u32>,
    trades: Vec<Compact>,
}

#[derive(Debug, Clone, Copy)]
struct Compact {
    user: u32,
    day: i32,
    side: Side,
    usd: Decimal,
    rate: Decimal,
    cop: Decimal,
}

impl AppliedTrades {
    /// Appends the next trade of the stream.
    fn push(
        &mut self,
        user: &str,
        day: NaiveDate,
        side: Side,
        usd: Decimal,
        rate: Decimal,
        cop: Decimal,
    ) {
        let user = match self.index.get(user) {
            Some(i) => *i,
            None => {
                let next = self.users.len() as u32;
                let id: Arc<str> = Arc::from(user);
                self.users.push(Arc::clone(&id));
                self.index.insert(id, next);
                next
            }
        };
        self.trades.push(Compact {
            user,
            day: days_since_epoch(day),
            side,
            usd,
            rate,
            cop,
        });
    }

    pub fn len(&self) -> usize {
        self.trades.len()
    }

    pub fn is_empty(&self) -> bool {
        self.trades.is_empty()
    }

    pub fn last_day(&self) -> Option<NaiveDate> {
        self.trades
            .iter()
            .map(|t| t.day)
            .max()
            .and_then(date_from_days)
    }

    /// Calls `emit` with every feature row — users in id order, each from its first applied
    /// trade's day to the last day of the history — and returns the trades the portfolio
    /// replay refused.
    pub fn for_each_row<E>(
        &self,
        mut emit: impl FnMut(FeatureRow) -> Result<(), E>,
    ) -> Result<u64, E> {
        let Some(last) = self.trades.iter().map(|t| t.day).max() else {
            return Ok(0);
        };
        // Users in id order; each user's trades in stream order (a stable sort by rank).
        let mut by_id: Vec<u32> = (0..self.users.len() as u32).collect();
        by_id.sort_by(|a, b| self.users[*a as usize].cmp(&self.users[*b as usize]));
        let mut rank = vec![0u32; self.users.len()];
        for (r, u) in by_id.iter().enumerate() {
            rank[*u as usize] = r as u32;
        }
        let mut order: Vec<u32> = (0..self.trades.len() as u32).collect();
        order.sort_by_key(|i| rank[self.trades[*i as usize].user as usize]);
        let placeholder: Arc<str> = Arc::from("");
        let mut not_replayable = 0;
        for group in
            order.chunk_by(|a, b| self.trades[*a as usize].user == self.trades[*b as usize].user)
        {
            let user = &self.users[self.trades[group[0] as usize].user as usize];
            let mut portfolio = Portfolio::new(&**user);
            let mut days: BTreeMap<i32, DayTotals> = BTreeMap::new();
            for i in group {
                let t = self.trades[*i as usize];
                let trade = Trade {
                    trade_id: Arc::clone(&placeholder),
                    user_id: Arc::clone(user),
                    side: t.side,
                    usd_amount: t.usd,
                    rate: t.rate,
                    executed_at: DateTime::UNIX_EPOCH,
                    channel: None,
                };
                if portfolio.apply(&trade).is_err() {
                    not_replayable += 1;
                    continue;
                }
                let totals = days.entry(t.day).or_default();
                totals.trades += 1;
                totals.buys += u64::from(t.side == Side::Buy);
                totals.cop += t.cop;
                totals.usd = portfolio.usd_balance;
                totals.realized = portfolio.realized_pnl_cop;
            }
            user_rows(user, &days, last, &mut emit)?;
        }
        Ok(not_replayable)
    }
}

/// One user's rows, from the first day with a trade to `last`.
fn user_rows<E>(
    user: &Arc<str>,
    days: &BTreeMap<i32, DayTotals>,
    last: i32,
    emit: &mut impl FnMut(FeatureRow) -> Result<(), E>,
) -> Result<(), E> {
    let Some((&first, _)) = days.iter().next() else {
        return Ok(());
    };
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
        emit(FeatureRow {
            user_id: Arc::clone(user),
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
        })?;
    }
    Ok(())
}

/// The features of `trades` (applied trades, in stream order by `sequence_number`): rows
/// sorted by user, then day, and the trades the replay refused.
pub fn user_features(trades: &[FeatureTrade]) -> (Vec<FeatureRow>, u64) {
    let mut sorted: Vec<&FeatureTrade> = trades.iter().collect();
    // Kinesis sequence numbers are decimal strings: shorter is earlier.
    sorted.sort_by(|a, b| {
        (a.sequence_number.len(), &a.sequence_number)
            .cmp(&(b.sequence_number.len(), &b.sequence_number))
    });
    let mut applied = AppliedTrades::default();
    for t in sorted {
        let tr = &t.trade;
        applied.push(
            &tr.user_id,
            t.day,
            tr.side,
            tr.usd_amount,
            tr.rate,
            t.cop_notional,
        );
    }
    let mut rows = Vec::new();
    let refused = applied
        .for_each_row(|r| {
            rows.push(r);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_else(|never| match never {});
    (rows, refused)
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
) -> Result<AppliedTrades, HistoryError> {
    let mut keys = lake.list("processed/trades/")?;
    keys.retain(|k| k.ends_with(".parquet"));
    keys.sort();
    let mut seen = std::collections::HashSet::new();
    let mut out = AppliedTrades::default();
    const WANTED: [&str; 8] = [
        "trade_id",
        "user_id",
        "side",
        "usd_amount",
        "rate",
        "status",
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
    out: &mut AppliedTrades,
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
    let (ids, users, sides, statuses) = (
        text("trade_id")?,
        text("user_id")?,
        text("side")?,
        text("status")?,
    );
    let (usd, rate, cop) = (dec("usd_amount")?, dec("rate")?, dec("cop_notional")?);
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
        let day = date_from_days(days.value(i)).ok_or("local_date out of range")?;
        out.push(
            users.value(i),
            day,
            side,
            decimal(&usd, i)?,
            decimal(&rate, i)?,
            decimal(&cop, i)?,
        );
    }
    Ok(())
}

/// Rebuilds the features and the training set from the lake's trade history, streaming the
/// rows to both outputs (memory holds the applied trades, 64 bytes each, not the rows).
pub fn run<L: LakeStore + LakeRead + ?Sized>(lake: &L) -> Result<FeaturesReport, HistoryError> {
    let started = std::time::Instant::now();
    let applied = read_applied(lake)?;
    let mut out = FeatureWriter::create(lake)?;
    let mut users = 0u64;
    let mut previous: Option<Arc<str>> = None;
    let not_replayable = applied.for_each_row(|row| {
        if previous
            .as_ref()
            .is_none_or(|p| !Arc::ptr_eq(p, &row.user_id))
        {
            users += 1;
            previous = Some(Arc::clone(&row.user_id));
        }
        out.push(row)
    })?;
    let mut report = FeaturesReport {
        trades: applied.len() as u64,
        users,
        not_replayable,
        last_day: applied.last_day(),
        ..FeaturesReport::default()
    };
    let (parquet, training) = out.finish()?;
    report.rows = parquet.rows;
    report.training_rows = training.rows;
    report.outputs.push(parquet);
    report.outputs.push(training);
    let names: Vec<&str> = std::iter::once("label_buy_next_7d")
        .chain(TRAINING_FEATURES.iter().copied())
        .collect();
    let written = lake.put(TRAINING_COLUMNS_KEY, &serde_json::to_vec_pretty(&names)?)?;
    report.outputs.push(OutputObject::written(
        TRAINING_COLUMNS_KEY,
        names.len() as u64,
        written,
    ));
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// The feature table's Parquet and the training set, written as rows come.
struct FeatureWriter {
    parquet: ArrowWriter<Box<dyn ObjectSink>>,
    training: Box<dyn ObjectSink>,
    batch: Vec<FeatureRow>,
    rows: u64,
    training_rows: u64,
}

impl FeatureWriter {
    fn create<L: LakeStore + ?Sized>(lake: &L) -> Result<FeatureWriter, HistoryError> {
        let sink = lake.create(USER_FEATURES_KEY)?;
        let parquet = ArrowWriter::try_new(sink, schema(), Some(super::writer_properties()))
            .map_err(parquet_error)?;
        Ok(FeatureWriter {
            parquet,
            training: lake.create(TRAINING_SET_KEY)?,
            batch: Vec::with_capacity(super::BATCH_ROWS),
            rows: 0,
            training_rows: 0,
        })
    }

    fn push(&mut self, row: FeatureRow) -> Result<(), HistoryError> {
        let labelled =
            write_training_line(&mut self.training, &row).map_err(|source| HistoryError::Read {
                key: TRAINING_SET_KEY.into(),
                source,
            })?;
        self.training_rows += u64::from(labelled);
        self.batch.push(row);
        self.rows += 1;
        if self.batch.len() >= super::BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), HistoryError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = feature_batch(&self.batch).map_err(|source| HistoryError::Arrow {
            key: USER_FEATURES_KEY.into(),
            source,
        })?;
        self.parquet.write(&batch).map_err(parquet_error)?;
        self.batch.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<(OutputObject, OutputObject), HistoryError> {
        self.flush()?;
        let parquet = self.parquet.into_inner().map_err(parquet_error)?.finish()?;
        let training = self.training.finish()?;
        Ok((
            OutputObject::written(USER_FEATURES_KEY, self.rows, parquet),
            OutputObject::written(TRAINING_SET_KEY, self.training_rows, training),
        ))
    }
}

fn parquet_error(source: parquet::errors::ParquetError) -> HistoryError {
    HistoryError::Parquet {
        key: USER_FEATURES_KEY.into(),
        source,
    }
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
    let mut out = Vec::new();
    match write_training_line(&mut out, r) {
        Ok(true) => Some(String::from_utf8_lossy(&out).trim_end().to_string()),
        _ => None,
    }
}

/// Writes `r`'s training line (and its newline) when it has a label; whether it did.
fn write_training_line(out: &mut impl Write, r: &FeatureRow) -> std::io::Result<bool> {
    let Some(label) = r.label_buy_next_7d else {
        return Ok(false);
    };
    // Every value at its column's scale, so a line reads the same whatever the arithmetic left.
    let fixed = |v: Decimal, scale: u8| {
        let mut v = v;
        v.rescale(u32::from(scale));
        v
    };
    writeln!(
        out,
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
    )?;
    Ok(true)
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
