//! One row of the trade history: an archive line, enriched, and its Arrow columns.
//!
//! Enrichment (money in exact decimals, rounding written down):
//! - `cop_notional` = `usd_amount × rate`, rounded half away from zero to 2 places;
//! - `local_date`, `local_hour`: `executed_at` in America/Bogota, UTC−5 all year (Colombia has
//!   no daylight saving time);
//! - `trm`: the official rate in force on `local_date`, null when none is known;
//! - `spread_cop` = `rate − trm` (COP per USD above the official rate), null with `trm`.

use std::sync::{Arc, OnceLock};

use arrow_array::builder::{
    Date32Builder, Decimal128Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, SchemaRef};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Timelike, Utc};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::contract::{OutColumn, OutType};
use crate::parse::days_since_epoch;
use crate::trades::{ArchivedTrade, Side};

use super::rates::RateTable;

/// Bounds of the history's decimal columns (digits, scale). A trade beyond them is rejected
/// with `out_of_range:<column>`, never rounded: up to a trillion USD, 100 million COP per USD.
pub const USD_AMOUNT: (u8, u8) = (14, 2);
pub const RATE: (u8, u8) = (12, 4);
pub const COP_NOTIONAL: (u8, u8) = (22, 2);
pub const TRM: (u8, u8) = (12, 2);
pub const SPREAD_COP: (u8, u8) = (13, 4);

/// America/Bogota's offset from UTC all year: Colombia has no daylight saving time.
pub const BOGOTA_UTC_OFFSET_HOURS: i64 = -5;

/// `at` as a Bogotá wall-clock date and time.
pub fn bogota_local(at: DateTime<Utc>) -> Option<NaiveDateTime> {
    at.naive_utc()
        .checked_add_signed(TimeDelta::hours(BOGOTA_UTC_OFFSET_HOURS))
}

/// The history's columns, in Parquet (and warehouse) order.
pub fn columns() -> &'static [OutColumn] {
    static COLUMNS: OnceLock<Vec<OutColumn>> = OnceLock::new();
    COLUMNS.get_or_init(|| {
        let col = |name: &str, ty: OutType, nullable: bool, free_text: bool| OutColumn {
            name: name.to_string(),
            ty,
            nullable,
            pii: false,
            free_text,
        };
        let dec = |(p, s): (u8, u8)| OutType::Decimal(p, s);
        vec![
            col("trade_id", OutType::Text, false, false),
            col("user_id", OutType::Text, false, false),
            col("side", OutType::Text, false, false),
            col("usd_amount", dec(USD_AMOUNT), false, false),
            col("rate", dec(RATE), false, false),
            col("executed_at", OutType::TimestampUtc, false, false),
            col("channel", OutType::Text, true, false),
            col("status", OutType::Text, false, false),
            col("reason", OutType::Text, false, false),
            col("sequence_number", OutType::Text, false, true),
            col("arrived_at", OutType::TimestampUtc, true, false),
            col("cop_notional", dec(COP_NOTIONAL), false, false),
            col("local_date", OutType::Date, false, false),
            col("local_hour", OutType::Int64, false, false),
            col("trm", dec(TRM), true, false),
            col("spread_cop", dec(SPREAD_COP), true, false),
            col("_source_key", OutType::Text, false, false),
            col("_source_line", OutType::Int64, false, false),
            col("_load_date", OutType::Date, false, false),
        ]
    })
}

/// The Arrow schema of [`columns`].
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| super::arrow_schema(columns()))
        .clone()
}

/// What the history adds to a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enriched {
    pub cop_notional: Decimal,
    pub local_date: NaiveDate,
    pub local_hour: u32,
    pub trm: Option<Decimal>,
    pub spread_cop: Option<Decimal>,
}

/// Why a valid trade cannot be a history row: a value beyond the history's column bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "out_of_range:{column}: {value} is beyond the history's bounds (DECIMAL({precision},{scale}))"
)]
pub struct OutOfRange {
    pub column: &'static str,
    pub value: String,
    pub precision: u8,
    pub scale: u8,
}

impl OutOfRange {
    pub fn code(&self) -> String {
        format!("out_of_range:{}", self.column)
    }
}

/// The enrichment of one trade executed at `executed_at` for `usd_amount` at `rate`.
pub fn enrich(
    usd_amount: Decimal,
    rate: Decimal,
    executed_at: DateTime<Utc>,
    rates: &RateTable,
) -> Result<Enriched, OutOfRange> {
    fits("usd_amount", usd_amount, USD_AMOUNT)?;
    fits("rate", rate, RATE)?;
    // Both bounded above: the product has at most 26 digits, inside a Decimal's 28.
    let cop_notional = usd_amount
        .checked_mul(rate)
        .map(|p| p.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero))
        .ok_or_else(|| out_of_range("cop_notional", usd_amount, COP_NOTIONAL))?;
    // Only the first hours of chrono's calendar have no local time.
    let local = bogota_local(executed_at).ok_or_else(|| OutOfRange {
        column: "executed_at",
        value: executed_at.to_rfc3339(),
        precision: 0,
        scale: 0,
    })?;
    let local_date = local.date();
    let trm = rates.on(local_date);
    Ok(Enriched {
        cop_notional,
        local_date,
        local_hour: local.hour(),
        trm,
        spread_cop: trm.map(|t| rate - t),
    })
}

fn fits(
    column: &'static str,
    value: Decimal,
    (precision, scale): (u8, u8),
) -> Result<(), OutOfRange> {
    match mantissa(value, scale) {
        Some(m) if m.unsigned_abs() < 10u128.pow(u32::from(precision)) => Ok(()),
        _ => Err(out_of_range(column, value, (precision, scale))),
    }
}

fn out_of_range(column: &'static str, value: Decimal, (precision, scale): (u8, u8)) -> OutOfRange {
    OutOfRange {
        column,
        value: value.to_string(),
        precision,
        scale,
    }
}

/// `value` as an integer of `scale` decimal places, if it has no more places than that.
fn mantissa(value: Decimal, scale: u8) -> Option<i128> {
    let scale = u32::from(scale);
    if value.scale() > scale {
        return None;
    }
    let m = value.mantissa();
    let factor = 10i128.checked_pow(scale - value.scale())?;
    m.checked_mul(factor)
}

/// Column builders for a batch of history rows.
pub struct RowBuilder {
    trade_id: StringBuilder,
    user_id: StringBuilder,
    side: StringBuilder,
    usd_amount: Decimal128Builder,
    rate: Decimal128Builder,
    executed_at: TimestampMicrosecondBuilder,
    channel: StringBuilder,
    status: StringBuilder,
    reason: StringBuilder,
    sequence_number: StringBuilder,
    arrived_at: TimestampMicrosecondBuilder,
    cop_notional: Decimal128Builder,
    local_date: Date32Builder,
    local_hour: Int64Builder,
    trm: Decimal128Builder,
    spread_cop: Decimal128Builder,
    source_key: StringBuilder,
    source_line: Int64Builder,
    load_date: Date32Builder,
    rows: usize,
}

impl RowBuilder {
    pub fn with_capacity(rows: usize) -> RowBuilder {
        let text = || StringBuilder::with_capacity(rows, rows * 16);
        let dec = || Decimal128Builder::with_capacity(rows);
        let ts = || TimestampMicrosecondBuilder::with_capacity(rows);
        RowBuilder {
            trade_id: text(),
            user_id: text(),
            side: text(),
            usd_amount: dec(),
            rate: dec(),
            executed_at: ts(),
            channel: text(),
            status: text(),
            reason: text(),
            sequence_number: StringBuilder::with_capacity(rows, rows * 56),
            arrived_at: ts(),
            cop_notional: dec(),
            local_date: Date32Builder::with_capacity(rows),
            local_hour: Int64Builder::with_capacity(rows),
            trm: dec(),
            spread_cop: dec(),
            source_key: text(),
            source_line: Int64Builder::with_capacity(rows),
            load_date: Date32Builder::with_capacity(rows),
            rows: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one row. The decimals were checked by [`enrich`], so they fit their columns.
    pub fn push(
        &mut self,
        line: &ArchivedTrade,
        e: &Enriched,
        source_key: &str,
        source_line: u64,
        load_date: NaiveDate,
    ) {
        let t = &line.trade;
        let dec = |b: &mut Decimal128Builder, v: Option<Decimal>, scale: u8| {
            b.append_option(v.and_then(|v| mantissa(v, scale)))
        };
        self.trade_id.append_value(&*t.trade_id);
        self.user_id.append_value(&*t.user_id);
        self.side.append_value(match t.side {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        });
        dec(&mut self.usd_amount, Some(t.usd_amount), USD_AMOUNT.1);
        dec(&mut self.rate, Some(t.rate), RATE.1);
        self.executed_at
            .append_value(t.executed_at.timestamp_micros());
        self.channel.append_option(t.channel.as_deref());
        self.status.append_value(line.status.as_str());
        self.reason.append_value(&line.reason);
        self.sequence_number.append_value(&line.sequence_number);
        self.arrived_at
            .append_option(line.arrived_at.map(|a| a.timestamp_micros()));
        dec(&mut self.cop_notional, Some(e.cop_notional), COP_NOTIONAL.1);
        self.local_date.append_value(days_since_epoch(e.local_date));
        self.local_hour.append_value(i64::from(e.local_hour));
        dec(&mut self.trm, e.trm, TRM.1);
        dec(&mut self.spread_cop, e.spread_cop, SPREAD_COP.1);
        self.source_key.append_value(source_key);
        self.source_line
            .append_value(i64::try_from(source_line).unwrap_or(i64::MAX));
        self.load_date.append_value(days_since_epoch(load_date));
        self.rows += 1;
    }

    /// The rows so far as one batch; the builder is empty again.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let dec = |b: &mut Decimal128Builder, (p, s): (u8, u8)| -> Result<ArrayRef, ArrowError> {
            Ok(Arc::new(b.finish().with_precision_and_scale(p, s as i8)?))
        };
        let ts = |b: &mut TimestampMicrosecondBuilder| -> ArrayRef {
            Arc::new(b.finish().with_timezone("UTC"))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trade_id.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.side.finish()),
            dec(&mut self.usd_amount, USD_AMOUNT)?,
            dec(&mut self.rate, RATE)?,
            ts(&mut self.executed_at),
            Arc::new(self.channel.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.sequence_number.finish()),
            ts(&mut self.arrived_at),
            dec(&mut self.cop_notional, COP_NOTIONAL)?,
            Arc::new(self.local_date.finish()),
            Arc::new(self.local_hour.finish()),
            dec(&mut self.trm, TRM)?,
            dec(&mut self.spread_cop, SPREAD_COP)?,
            Arc::new(self.source_key.finish()),
            Arc::new(self.source_line.finish()),
            Arc::new(self.load_date.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(schema(), columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::rates::Rate;
    use chrono::TimeZone;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).expect("test decimal")
    }

    fn rates() -> RateTable {
        RateTable::from_rates([Rate {
            from: NaiveDate::from_ymd_opt(2026, 11, 28).expect("date"),
            to: NaiveDate::from_ymd_opt(2026, 11, 30).expect("date"),
            cop_per_usd: dec("4120.55"),
        }])
    }

    #[test]
    fn notional_rounds_half_away_from_zero_to_the_cent() {
        let at = Utc.with_ymd_and_hms(2026, 11, 28, 17, 0, 0).unwrap();
        // 0.01 × 4012.3450 = 40.12345 → 40.12; 0.03 × 4012.3450 = 120.37035 → 120.37;
        // 0.10 × 4012.3450 = 401.2345 → 401.23; 0.02 × 4012.3750 = 80.2475 → 80.25 (half up)
        for (usd, rate, want) in [
            ("0.01", "4012.3450", "40.12"),
            ("0.03", "4012.3450", "120.37"),
            ("0.10", "4012.3450", "401.23"),
            ("0.02", "4012.3750", "80.25"),
            ("0.01", "4012.5000", "40.13"),
        ] {
            let e = enrich(dec(usd), dec(rate), at, &rates()).unwrap();
            assert_eq!(e.cop_notional, dec(want), "{usd} × {rate}");
        }
    }

    #[test]
    fn local_date_and_hour_are_bogota_time_and_pick_the_rate_in_force() {
        // GIVEN 2026-11-29T03:30Z = 2026-11-28 22:30 in Bogotá (a Saturday)
        let at = Utc.with_ymd_and_hms(2026, 11, 29, 3, 30, 0).unwrap();
        let e = enrich(dec("100"), dec("4150.0000"), at, &rates()).unwrap();
        assert_eq!(e.local_date, NaiveDate::from_ymd_opt(2026, 11, 28).unwrap());
        assert_eq!(e.local_hour, 22);
        assert_eq!(e.trm, Some(dec("4120.55")));
        assert_eq!(e.spread_cop, Some(dec("29.45")));
        // AND a day without a published rate keeps the trade, with no TRM and no spread
        let later = Utc.with_ymd_and_hms(2026, 12, 1, 5, 0, 0).unwrap();
        let e = enrich(dec("100"), dec("4150"), later, &rates()).unwrap();
        assert_eq!((e.trm, e.spread_cop), (None, None));
        assert_eq!(e.local_hour, 0);
    }

    #[test]
    fn amounts_beyond_the_columns_are_out_of_range_not_rounded() {
        let at = Utc.with_ymd_and_hms(2026, 11, 28, 17, 0, 0).unwrap();
        let err = enrich(dec("1000000000000"), dec("4000"), at, &rates()).unwrap_err();
        assert_eq!(err.code(), "out_of_range:usd_amount");
        let err = enrich(dec("1"), dec("100000000"), at, &rates()).unwrap_err();
        assert_eq!(err.code(), "out_of_range:rate");
        assert!(enrich(dec("999999999999.99"), dec("99999999.9999"), at, &rates()).is_ok());
    }
}
