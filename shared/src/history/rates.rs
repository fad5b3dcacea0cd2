//! The official rates (TRM, COP per USD) in force day by day, read from the processed `trm`
//! dataset — the Parquet the warehouse's `trm` table is loaded from.
//!
//! Several files may publish a rate for the same first day (a correction); as in the
//! warehouse's upsert by `vigenciadesde`, the row with the latest `_load_date` wins (then the
//! later object, then the later row). On a given day the rate in force is the one whose interval
//! starts last on or before it and still covers it.

use std::collections::BTreeMap;

use arrow_array::{Array, Date32Array, Decimal128Array};
use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::contract::Dataset;
use crate::lake::{LakeError, LakeRead, LakeStore, Zone};
use crate::parse::{date_from_days, days_since_epoch};

use super::HistoryError;

/// One published rate: in force on every day of `[from, to]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub cop_per_usd: Decimal,
}

/// The rates in force, by first day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateTable {
    /// First day (days since 1970-01-01) → (last day, rate).
    by_first: BTreeMap<i32, (i32, Decimal)>,
}

impl RateTable {
    /// Rates given in precedence order, lowest first: a later rate with the same first day
    /// replaces an earlier one.
    pub fn from_rates(rates: impl IntoIterator<Item = Rate>) -> RateTable {
        let mut by_first = BTreeMap::new();
        for r in rates {
            if r.from <= r.to {
                by_first.insert(
                    days_since_epoch(r.from),
                    (days_since_epoch(r.to), r.cop_per_usd),
                );
            }
        }
        RateTable { by_first }
    }

    /// The rate in force on `day`, if one is known.
    pub fn on(&self, day: NaiveDate) -> Option<Decimal> {
        let d = days_since_epoch(day);
        let (_, (last, rate)) = self.by_first.range(..=d).next_back()?;
        (*last >= d).then_some(*rate)
    }

    pub fn len(&self) -> usize {
        self.by_first.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_first.is_empty()
    }

    /// The rates, by first day.
    pub fn rates(&self) -> impl Iterator<Item = Rate> + '_ {
        self.by_first.iter().filter_map(|(from, (to, rate))| {
            Some(Rate {
                from: date_from_days(*from)?,
                to: date_from_days(*to)?,
                cop_per_usd: *rate,
            })
        })
    }

    /// Every rate of the lake's processed `trm` Parquet.
    pub fn from_lake<L: LakeStore + LakeRead + ?Sized>(
        lake: &L,
    ) -> Result<RateTable, HistoryError> {
        let mut keys = lake.list(&format!("{}/{}/", Zone::Processed.prefix(), Dataset::Trm))?;
        keys.retain(|k| k.ends_with(".parquet"));
        keys.sort();
        let mut rows: Vec<(i32, usize, usize, Rate)> = Vec::new();
        for (object, key) in keys.iter().enumerate() {
            for (row, (load_day, rate)) in read_rates(lake, key)?.into_iter().enumerate() {
                rows.push((load_day, object, row, rate));
            }
        }
        rows.sort_by_key(|(load_day, object, row, _)| (*load_day, *object, *row));
        Ok(RateTable::from_rates(rows.into_iter().map(|(.., r)| r)))
    }
}

/// (`_load_date` as days, rate) of each row of one processed `trm` part.
fn read_rates<L: LakeRead + ?Sized>(lake: &L, key: &str) -> Result<Vec<(i32, Rate)>, HistoryError> {
    let bad = |detail: String| HistoryError::Unreadable {
        key: key.to_string(),
        detail,
    };
    let mut out = Vec::new();
    for batch in super::read_columns(
        lake,
        key,
        &["valor", "vigenciadesde", "vigenciahasta", "_load_date"],
    )? {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| bad(format!("no column {name}")))
        };
        let valor = column("valor")?;
        let valor = valor
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .ok_or_else(|| bad("valor is not a decimal".into()))?;
        let dates = |name: &str| {
            column(name)?
                .as_any()
                .downcast_ref::<Date32Array>()
                .cloned()
                .ok_or_else(|| bad(format!("{name} is not a date")))
        };
        let (from, to, load) = (
            dates("vigenciadesde")?,
            dates("vigenciahasta")?,
            dates("_load_date")?,
        );
        let scale = u32::try_from(valor.scale()).map_err(|_| bad("negative scale".into()))?;
        for i in 0..batch.num_rows() {
            if valor.is_null(i) || from.is_null(i) || to.is_null(i) {
                continue;
            }
            let (Some(f), Some(t)) = (date_from_days(from.value(i)), date_from_days(to.value(i)))
            else {
                continue;
            };
            let cop_per_usd = Decimal::try_from_i128_with_scale(valor.value(i), scale)
                .map_err(|e| bad(format!("valor: {e}")))?;
            let load_day = if load.is_null(i) {
                i32::MIN
            } else {
                load.value(i)
            };
            out.push((
                load_day,
                Rate {
                    from: f,
                    to: t,
                    cop_per_usd,
                },
            ));
        }
    }
    Ok(out)
}

impl From<LakeError> for HistoryError {
    fn from(e: LakeError) -> Self {
        HistoryError::Lake(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::from_str(s).expect("test date")
    }

    fn rate(from: &str, to: &str, v: &str) -> Rate {
        Rate {
            from: day(from),
            to: day(to),
            cop_per_usd: Decimal::from_str(v).expect("test decimal"),
        }
    }

    #[test]
    fn a_friday_rate_is_in_force_over_the_weekend_and_a_missing_day_has_none() {
        // GIVEN Thursday's rate for Friday, Friday's for Saturday to Monday, nothing after
        let table = RateTable::from_rates([
            rate("2026-11-27", "2026-11-27", "4100.10"),
            rate("2026-11-28", "2026-11-30", "4120.55"),
        ]);
        // THEN each day finds the rate in force, and a day past every interval finds none
        assert_eq!(
            table.on(day("2026-11-27")),
            Decimal::from_str("4100.10").ok()
        );
        for d in ["2026-11-28", "2026-11-29", "2026-11-30"] {
            assert_eq!(table.on(day(d)), Decimal::from_str("4120.55").ok(), "{d}");
        }
        assert_eq!(table.on(day("2026-12-01")), None);
        assert_eq!(table.on(day("2026-11-26")), None);
    }

    #[test]
    fn a_later_rate_for_the_same_first_day_replaces_the_earlier_one() {
        let table = RateTable::from_rates([
            rate("2026-11-28", "2026-11-30", "4120.55"),
            rate("2026-11-28", "2026-11-29", "4121.00"),
        ]);
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.on(day("2026-11-29")),
            Decimal::from_str("4121.00").ok()
        );
        assert_eq!(table.on(day("2026-11-30")), None);
    }
}
