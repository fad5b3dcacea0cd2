//! A user's dollar portfolio under the average-cost method.
//!
//! - BUY `a` at rate `r`: `usd_balance += a`; `cost_basis_cop += round2(a × r)`.
//! - SELL `a` at rate `r`: rejected `insufficient_balance` when `a > usd_balance` (portfolio
//!   unchanged). Otherwise `removed = cost_basis_cop` when `a = usd_balance`, else
//!   `round2(a × cost_basis_cop / usd_balance)`; `realized_pnl_cop += round2(a × r) − removed`;
//!   `cost_basis_cop −= removed`; `usd_balance −= a`.
//!
//! `round2` rounds half away from zero to 2 places (`RoundingStrategy::MidpointAwayFromZero`).
//! The arithmetic is done on integer cents with an exact multiply-then-divide, so every result
//! is the exactly rounded value of the formula, never a double rounding; a value that would not
//! fit a `Decimal` (beyond 7.9 × 10²⁶ COP) rejects the trade as `amount_out_of_range` instead of
//! panicking.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::ports::Recommendation;
use super::trade::{Side, Trade};

/// Largest mantissa a `Decimal` holds (2⁹⁶ − 1).
const MAX_MANTISSA: u128 = (1u128 << 96) - 1;

/// Per-user state, as stored. USD and COP amounts always carry scale 2.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Portfolio {
    pub user_id: String,
    pub usd_balance: Decimal,
    pub cost_basis_cop: Decimal,
    pub realized_pnl_cop: Decimal,
    pub trades_applied: u64,
    pub last_trade_id: Option<String>,
    pub last_executed_at: Option<DateTime<Utc>>,
    pub last_rate: Option<Decimal>,
    pub recommendation: Option<Recommendation>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Clone for Portfolio {
    fn clone(&self) -> Self {
        Self {
            user_id: self.user_id.clone(),
            usd_balance: self.usd_balance,
            cost_basis_cop: self.cost_basis_cop,
            realized_pnl_cop: self.realized_pnl_cop,
            trades_applied: self.trades_applied,
            last_trade_id: self.last_trade_id.clone(),
            last_executed_at: self.last_executed_at,
            last_rate: self.last_rate,
            recommendation: self.recommendation.clone(),
            updated_at: self.updated_at,
        }
    }

    /// Reuses the strings' buffers: stores overwrite a user's portfolio on every commit.
    fn clone_from(&mut self, source: &Self) {
        self.user_id.clone_from(&source.user_id);
        self.usd_balance = source.usd_balance;
        self.cost_basis_cop = source.cost_basis_cop;
        self.realized_pnl_cop = source.realized_pnl_cop;
        self.trades_applied = source.trades_applied;
        self.last_trade_id.clone_from(&source.last_trade_id);
        self.last_executed_at = source.last_executed_at;
        self.last_rate = source.last_rate;
        match (&mut self.recommendation, &source.recommendation) {
            (Some(mine), Some(theirs)) => {
                mine.action = theirs.action;
                mine.source = theirs.source;
                mine.reason.clone_from(&theirs.reason);
            }
            (mine, theirs) => *mine = theirs.clone(),
        }
        self.updated_at = source.updated_at;
    }
}

/// What an applied trade did, with the portfolio's balances right after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub side: Side,
    /// `round2(a × r)`: the cost of a BUY, the proceeds of a SELL.
    pub cop_amount: Decimal,
    /// Cost basis taken out by a SELL (zero for a BUY).
    pub removed_cop: Decimal,
    /// `cop_amount − removed_cop` for a SELL (zero for a BUY).
    pub realized_pnl_cop: Decimal,
    pub usd_balance: Decimal,
    pub cost_basis_cop: Decimal,
}

/// A business rejection: the trade is decided, but changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("insufficient balance: selling {requested} USD with {available} USD available")]
    InsufficientBalance {
        requested: Decimal,
        available: Decimal,
    },
    #[error("amount out of range: the result does not fit a decimal")]
    OutOfRange,
}

impl Rejection {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::InsufficientBalance { .. } => "insufficient_balance",
            Rejection::OutOfRange => "amount_out_of_range",
        }
    }
}

impl Portfolio {
    /// An empty portfolio: what a user without a stored item has.
    pub fn new(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            usd_balance: cents_to_decimal(0),
            cost_basis_cop: cents_to_decimal(0),
            realized_pnl_cop: cents_to_decimal(0),
            trades_applied: 0,
            last_trade_id: None,
            last_executed_at: None,
            last_rate: None,
            recommendation: None,
            updated_at: None,
        }
    }

    /// Average cost in COP per USD, rounded half away from zero to 4 places; `None` without
    /// a balance.
    pub fn average_cost(&self) -> Option<Decimal> {
        if self.usd_balance.is_zero() {
            return None;
        }
        self.cost_basis_cop
            .checked_div(self.usd_balance)
            .map(|avg| {
                avg.round_dp_with_strategy(4, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
            })
    }

    /// Applies one trade (the caller has made sure it was never decided before). On `Err`
    /// the portfolio is unchanged.
    pub fn apply(&mut self, trade: &Trade) -> Result<Applied, Rejection> {
        let amount = units(trade.usd_amount, 2).ok_or(Rejection::OutOfRange)?;
        let rate = units(trade.rate, 4).ok_or(Rejection::OutOfRange)?;
        let balance = units(self.usd_balance, 2).ok_or(Rejection::OutOfRange)?;
        let basis = units(self.cost_basis_cop, 2).ok_or(Rejection::OutOfRange)?;
        let pnl = signed_units(self.realized_pnl_cop).ok_or(Rejection::OutOfRange)?;
        // a (cents) × r (1e-4 COP) / 10⁴ = COP cents, rounded once.
        let cop = mul_div_round(amount, rate, 10_000).ok_or(Rejection::OutOfRange)?;

        let applied = match trade.side {
            Side::Buy => {
                let balance = fit(amount.checked_add(balance))?;
                let basis = fit(basis.checked_add(cop))?;
                self.usd_balance = cents_to_decimal(balance as i128);
                self.cost_basis_cop = cents_to_decimal(basis as i128);
                Applied {
                    side: Side::Buy,
                    cop_amount: cents_to_decimal(cop as i128),
                    removed_cop: cents_to_decimal(0),
                    realized_pnl_cop: cents_to_decimal(0),
                    usd_balance: self.usd_balance,
                    cost_basis_cop: self.cost_basis_cop,
                }
            }
            Side::Sell => {
                if amount > balance {
                    return Err(Rejection::InsufficientBalance {
                        requested: trade.usd_amount,
                        available: self.usd_balance,
                    });
                }
                let removed = if amount == balance {
                    basis
                } else {
                    mul_div_round(amount, basis, balance).ok_or(Rejection::OutOfRange)?
                };
                let realized = cop as i128 - removed as i128;
                let pnl = pnl
                    .checked_add(realized)
                    .filter(|p| p.unsigned_abs() <= MAX_MANTISSA)
                    .ok_or(Rejection::OutOfRange)?;
                self.usd_balance = cents_to_decimal((balance - amount) as i128);
                self.cost_basis_cop = cents_to_decimal((basis - removed) as i128);
                self.realized_pnl_cop = cents_to_decimal(pnl);
                Applied {
                    side: Side::Sell,
                    cop_amount: cents_to_decimal(cop as i128),
                    removed_cop: cents_to_decimal(removed as i128),
                    realized_pnl_cop: cents_to_decimal(realized),
                    usd_balance: self.usd_balance,
                    cost_basis_cop: self.cost_basis_cop,
                }
            }
        };
        self.trades_applied += 1;
        // Reuse the buffer: this runs once per applied trade.
        match &mut self.last_trade_id {
            Some(id) => {
                id.clear();
                id.push_str(&trade.trade_id);
            }
            None => self.last_trade_id = Some(trade.trade_id.to_string()),
        }
        self.last_executed_at = Some(trade.executed_at);
        self.last_rate = Some(trade.rate);
        Ok(applied)
    }
}

fn fit(value: Option<u128>) -> Result<u128, Rejection> {
    value
        .filter(|v| *v <= MAX_MANTISSA)
        .ok_or(Rejection::OutOfRange)
}

fn cents_to_decimal(cents: i128) -> Decimal {
    // Callers only pass values checked against MAX_MANTISSA.
    Decimal::from_i128_with_scale(cents, 2)
}

/// A non-negative decimal as an integer count of `10^-scale` units; `None` when negative or
/// finer than `scale` (which a stored portfolio never is).
fn units(value: Decimal, scale: u32) -> Option<u128> {
    if value.is_sign_negative() && !value.is_zero() {
        return None;
    }
    signed_units_at(value, scale).map(|u| u.unsigned_abs())
}

fn signed_units(value: Decimal) -> Option<i128> {
    signed_units_at(value, 2)
}

fn signed_units_at(value: Decimal, scale: u32) -> Option<i128> {
    let mut mantissa = value.mantissa();
    let mut s = value.scale();
    while s > scale {
        // Only trailing zeros may be dropped.
        if mantissa % 10 != 0 {
            return None;
        }
        mantissa /= 10;
        s -= 1;
    }
    mantissa.checked_mul(10i128.checked_pow(scale - s)?)
}

/// `round_half_away_from_zero(a × b / d)` for `a, b, d < 2⁹⁶`, `d > 0`, exact; `None` when the
/// result does not fit a `Decimal` mantissa.
fn mul_div_round(a: u128, b: u128, d: u128) -> Option<u128> {
    let (q, r) = match a.checked_mul(b) {
        Some(n) if n <= u64::MAX as u128 && d <= u64::MAX as u128 => {
            let (n, d64) = (n as u64, d as u64);
            ((n / d64) as u128, (n % d64) as u128)
        }
        Some(n) => (n / d, n % d),
        None => wide_div(a, b, d),
    };
    let q = if r >= d - r { q + 1 } else { q };
    (q <= MAX_MANTISSA).then_some(q)
}

/// `(a × b) / d` and its remainder for products beyond `u128`, by binary long division
/// (a, b, d < 2⁹⁶, so the product has at most 192 bits and the remainder fits easily).
fn wide_div(a: u128, b: u128, d: u128) -> (u128, u128) {
    const MASK: u128 = u64::MAX as u128;
    let (a_hi, a_lo) = (a >> 64, a & MASK);
    let (b_hi, b_lo) = (b >> 64, b & MASK);
    let lo_lo = a_lo * b_lo;
    let mid = a_hi * b_lo + a_lo * b_hi; // < 2^97: both terms are < 2^96
    let hi_hi = a_hi * b_hi; // < 2^64
    let (lo, carry) = lo_lo.overflowing_add(mid << 64);
    let hi = hi_hi + (mid >> 64) + carry as u128;
    let mut quotient: u128 = 0;
    let mut rem: u128 = 0;
    for i in (0..256).rev() {
        let bit = if i >= 128 {
            (hi >> (i - 128)) & 1
        } else {
            (lo >> i) & 1
        };
        rem = (rem << 1) | bit;
        quotient <<= 1;
        if rem >= d {
            rem -= d;
            quotient |= 1;
        }
    }
    (quotient, rem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).expect("test decimal")
    }

    fn round2(d: Decimal) -> Decimal {
        d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
    }

    pub(crate) fn trade(id: &str, side: Side, usd: &str, rate: &str) -> Trade {
        let mut usd_amount = dec(usd);
        usd_amount.rescale(2);
        let mut rate = dec(rate);
        rate.rescale(4);
        Trade {
            trade_id: id.into(),
            user_id: "u".into(),
            side,
            usd_amount,
            rate,
            executed_at: Utc.with_ymd_and_hms(2026, 11, 28, 17, 0, 0).unwrap(),
            channel: None,
        }
    }

    #[test]
    fn worked_example_buy_buy_sell_sell() -> Result<(), Rejection> {
        // GIVEN an empty portfolio
        let mut p = Portfolio::new("u");
        // WHEN BUY 100 @ 4000, BUY 50 @ 4100.5
        p.apply(&trade("t1", Side::Buy, "100", "4000.0000"))?;
        let b = p.apply(&trade("t2", Side::Buy, "50", "4100.5000"))?;
        // THEN the basis is the sum of the costs
        assert_eq!(b.cop_amount, dec("205025.00"));
        assert_eq!(p.usd_balance, dec("150.00"));
        assert_eq!(p.cost_basis_cop, dec("605025.00"));
        assert_eq!(p.average_cost(), Some(dec("4033.5000")));

        // WHEN SELL 120 @ 4200: removed = 120 × 605025 / 150 = 484020.00
        let s = p.apply(&trade("t3", Side::Sell, "120", "4200"))?;
        assert_eq!(s.cop_amount, dec("504000.00"));
        assert_eq!(s.removed_cop, dec("484020.00"));
        assert_eq!(s.realized_pnl_cop, dec("19980.00"));
        assert_eq!(p.usd_balance, dec("30.00"));
        assert_eq!(p.cost_basis_cop, dec("121005.00"));
        assert_eq!(p.realized_pnl_cop, dec("19980.00"));

        // WHEN SELL the rest @ 3900: the whole basis goes, at a loss
        let s = p.apply(&trade("t4", Side::Sell, "30", "3900"))?;
        assert_eq!(s.removed_cop, dec("121005.00"));
        assert_eq!(s.realized_pnl_cop, dec("-4005.00"));
        assert_eq!(p.usd_balance, Decimal::ZERO);
        assert_eq!(p.cost_basis_cop, Decimal::ZERO);
        assert_eq!(p.realized_pnl_cop, dec("15975.00"));
        assert_eq!(p.trades_applied, 4);
        assert_eq!(p.last_trade_id.as_deref(), Some("t4"));
        assert_eq!(p.last_rate, Some(dec("3900.0000")));
        assert_eq!(p.usd_balance.to_string(), "0.00");
        Ok(())
    }

    #[test]
    fn cop_is_rounded_half_away_from_zero() -> Result<(), Rejection> {
        // 0.01 × 4000.5 = 40.005 → 40.01 (banker's rounding would give 40.00)
        let mut p = Portfolio::new("u");
        let b = p.apply(&trade("t1", Side::Buy, "0.01", "4000.5"))?;
        assert_eq!(b.cop_amount, dec("40.01"));
        Ok(())
    }

    #[test]
    fn removed_basis_is_rounded_per_sale_and_the_last_sale_takes_the_rest() -> Result<(), Rejection>
    {
        // GIVEN 3 USD with a basis of 100.00 COP (bought at 33.3333)
        let mut p = Portfolio::new("u");
        p.apply(&trade("t0", Side::Buy, "3", "33.3333"))?;
        assert_eq!(p.cost_basis_cop, dec("100.00"));
        // WHEN selling 1 USD three times
        let r1 = p.apply(&trade("t1", Side::Sell, "1", "40"))?.removed_cop;
        let r2 = p.apply(&trade("t2", Side::Sell, "1", "40"))?.removed_cop;
        let r3 = p.apply(&trade("t3", Side::Sell, "1", "40"))?.removed_cop;
        // THEN 33.333… → 33.33, 66.67 / 2 = 33.335 → 33.34, then exactly what is left
        assert_eq!((r1, r2, r3), (dec("33.33"), dec("33.34"), dec("33.33")));
        assert_eq!(p.cost_basis_cop, Decimal::ZERO);
        assert_eq!(p.realized_pnl_cop, dec("20.00"));
        Ok(())
    }

    #[test]
    fn overselling_is_rejected_and_changes_nothing() -> Result<(), Rejection> {
        let mut p = Portfolio::new("u");
        p.apply(&trade("t1", Side::Buy, "10", "4000"))?;
        let before = p.clone();
        let err = p.apply(&trade("t2", Side::Sell, "10.01", "4000"));
        assert_eq!(
            err,
            Err(Rejection::InsufficientBalance {
                requested: dec("10.01"),
                available: dec("10.00"),
            })
        );
        assert_eq!(err.map(|_| ()).unwrap_err().code(), "insufficient_balance");
        assert_eq!(p, before);
        Ok(())
    }

    #[test]
    fn huge_amounts_are_rejected_not_panicking() -> Result<(), Rejection> {
        let mut p = Portfolio::new("u");
        // a balance of 5 × 10²⁶ USD: doubling it does not fit a Decimal of cents
        let big = "500000000000000000000000000.00";
        p.apply(&trade("t1", Side::Buy, big, "0.0001"))?;
        let before = p.clone();
        assert_eq!(
            p.apply(&trade("t2", Side::Buy, big, "1")),
            Err(Rejection::OutOfRange)
        );
        assert_eq!(p, before);
        Ok(())
    }

    #[test]
    fn wide_division_matches_decimal_arithmetic() {
        // (2^95 + 12345) × (2^90 + 7) / (2^93 + 1) computed both ways
        let a = (1u128 << 95) + 12345;
        let b = (1u128 << 90) + 7;
        let d = (1u128 << 93) + 1;
        let (q, r) = wide_div(a, b, d);
        // q × d + r = a × b, checked in 256-bit via splitting into 2^64 limbs
        let lhs = mul_256(q, d);
        let (lo, carry) = lhs.1.overflowing_add(r);
        assert_eq!((lhs.0 + carry as u128, lo), mul_256(a, b));
        assert!(r < d);
    }

    fn mul_256(a: u128, b: u128) -> (u128, u128) {
        const MASK: u128 = u64::MAX as u128;
        let (a1, a0) = (a >> 64, a & MASK);
        let (b1, b0) = (b >> 64, b & MASK);
        let p00 = a0 * b0;
        let p01 = a0 * b1;
        let p10 = a1 * b0;
        let p11 = a1 * b1;
        let (mid, c1) = p01.overflowing_add(p10);
        let (lo, c2) = p00.overflowing_add(mid << 64);
        let hi = p11 + (mid >> 64) + ((c1 as u128) << 64) + c2 as u128;
        (hi, lo)
    }

    fn arb_trade() -> impl Strategy<Value = (bool, u64, u64)> {
        // (is_buy, cents 1..=500_000, rate in 1e-4 units around 3,900–4,400)
        (
            proptest::bool::weighted(0.6),
            1u64..=500_000,
            39_000_000u64..=44_000_000,
        )
    }

    proptest! {
        /// Conservation: basis + Σ removed = Σ buy cost; realized = Σ proceeds − Σ removed;
        /// the balance is Σ bought − Σ sold, never negative, and a zero balance has zero basis.
        #[test]
        fn cop_is_conserved(ops in proptest::collection::vec(arb_trade(), 1..80)) {
            let mut p = Portfolio::new("u");
            let (mut bought, mut sold) = (Decimal::ZERO, Decimal::ZERO);
            let (mut buy_cost, mut proceeds, mut removed) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
            for (i, (is_buy, cents, rate)) in ops.into_iter().enumerate() {
                let side = if is_buy { Side::Buy } else { Side::Sell };
                let mut t = trade(&format!("t{i}"), side, "1", "1");
                t.usd_amount = Decimal::new(cents as i64, 2);
                t.rate = Decimal::new(rate as i64, 4);
                let before = p.clone();
                match p.apply(&t) {
                    Ok(a) => {
                        prop_assert_eq!(a.cop_amount, round2(t.usd_amount * t.rate));
                        match side {
                            Side::Buy => { bought += t.usd_amount; buy_cost += a.cop_amount; }
                            Side::Sell => {
                                sold += t.usd_amount; proceeds += a.cop_amount; removed += a.removed_cop;
                                let expected = if t.usd_amount == before.usd_balance {
                                    before.cost_basis_cop
                                } else {
                                    round2(t.usd_amount * before.cost_basis_cop / before.usd_balance)
                                };
                                prop_assert_eq!(a.removed_cop, expected);
                            }
                        }
                    }
                    Err(Rejection::InsufficientBalance { .. }) => {
                        prop_assert!(t.usd_amount > before.usd_balance);
                        prop_assert_eq!(&p, &before);
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
                prop_assert_eq!(p.cost_basis_cop + removed, buy_cost);
                prop_assert_eq!(p.realized_pnl_cop, proceeds - removed);
                prop_assert_eq!(p.usd_balance, bought - sold);
                prop_assert!(p.usd_balance >= Decimal::ZERO && p.cost_basis_cop >= Decimal::ZERO);
                if p.usd_balance.is_zero() { prop_assert!(p.cost_basis_cop.is_zero()); }
            }
        }
    }
}
