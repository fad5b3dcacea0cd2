//! `lago trades generate`: a deterministic, realistic stream of trade events as NDJSON.
//!
//! Rates follow a random walk inside 3,900–4,400 COP/USD (4 decimals); users are drawn from a
//! Zipf-like law (a few heavy traders, many light ones); buys outnumber sells and every clean
//! sell stays within the user's balance. With `dirty_pct > 0`, that share of lines is replaced
//! by one of: an exact copy of an earlier valid line (a redelivery), a malformed line, a line
//! with one invalid field, or a sell above the balance. The report counts each kind, so a
//! replay of the file must give `applied = valid`, `duplicates = duplicates`,
//! `insufficient_balance = oversells` and `malformed + invalid_fields` dead letters.

use std::fmt::Write as _;
use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TradeGenerateOptions {
    /// Lines to write.
    pub trades: u64,
    /// Users to draw from (at least 1).
    pub users: u64,
    pub seed: u64,
    /// Percentage (0–100) of lines that are dirty.
    pub dirty_pct: f64,
    /// Spread the trades evenly over this many days ending 2026-11-28 13:00 UTC (0: one
    /// trade every 0.75 s on average from that moment, a burst of a peak hour).
    pub span_days: u32,
}

impl Default for TradeGenerateOptions {
    fn default() -> Self {
        Self {
            trades: 10_000,
            users: 100,
            seed: 42,
            dirty_pct: 0.0,
            span_days: 0,
        }
    }
}

/// What was written, by kind. `lines = valid + duplicates + malformed + invalid_fields +
/// oversells`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TradeGenerateReport {
    pub lines: u64,
    /// Valid trades that apply (`buys + sells`).
    pub valid: u64,
    pub buys: u64,
    pub sells: u64,
    /// Exact copies of earlier valid lines.
    pub duplicates: u64,
    /// Lines that are not a JSON object.
    pub malformed: u64,
    /// JSON objects with one missing or invalid field.
    pub invalid_fields: u64,
    /// Valid sells above the balance (rejected `insufficient_balance`).
    pub oversells: u64,
    /// Users with at least one valid or oversold trade (= portfolios after a replay).
    pub users: u64,
}

/// 2026-11-28T13:00:00Z, in milliseconds.
const START_MS: i64 = 1_795_870_800_000;
const RATE_MIN: i64 = 39_000_000;
const RATE_MAX: i64 = 44_000_000;
const RECENT: usize = 256;

/// Writes `opts.trades` NDJSON lines to `out`. The same options always give the same bytes.
pub fn generate_trades(
    opts: &TradeGenerateOptions,
    mut out: impl Write,
) -> io::Result<TradeGenerateReport> {
    let mut gen = Generator::new(opts);
    let mut report = TradeGenerateReport::default();
    let mut line = String::with_capacity(256);
    for n in 0..opts.trades {
        line.clear();
        gen.next_line(n, &mut line, &mut report);
        line.push('\n');
        out.write_all(line.as_bytes())?;
        report.lines += 1;
    }
    report.users = gen.active.iter().filter(|a| **a).count() as u64;
    out.flush()?;
    Ok(report)
}

struct Generator {
    rng: ChaCha8Rng,
    seed: u64,
    dirty_pct: f64,
    /// Cumulative Zipf weights.
    cumulative: Vec<f64>,
    balance_cents: Vec<u64>,
    active: Vec<bool>,
    rate_e4: i64,
    time_ms: i64,
    /// Largest gap between two trades, in milliseconds.
    max_gap_ms: i64,
    recent: Vec<String>,
}

enum Kind {
    Clean,
    Duplicate,
    Malformed,
    InvalidField,
    Oversell,
}

impl Generator {
    fn new(opts: &TradeGenerateOptions) -> Self {
        let users = opts.users.max(1) as usize;
        let mut total = 0.0;
        let cumulative = (0..users)
            .map(|i| {
                total += 1.0 / ((i + 1) as f64).powf(1.1);
                total
            })
            .collect();
        Self {
            rng: ChaCha8Rng::seed_from_u64(opts.seed),
            seed: opts.seed,
            dirty_pct: opts.dirty_pct.clamp(0.0, 100.0),
            cumulative,
            balance_cents: vec![0; users],
            active: vec![false; users],
            rate_e4: 41_500_000,
            time_ms: START_MS - i64::from(opts.span_days) * 86_400_000,
            // Twice the mean gap, so the trades end near the span's end.
            max_gap_ms: if opts.span_days == 0 {
                1_500
            } else {
                (2 * i64::from(opts.span_days) * 86_400_000 / (opts.trades.max(1) as i64)).max(1)
            },
            recent: Vec::with_capacity(RECENT),
        }
    }

    fn pick_user(&mut self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let x = self.rng.random::<f64>() * total;
        self.cumulative
            .partition_point(|c| *c < x)
            .min(self.cumulative.len() - 1)
    }

    fn next_line(&mut self, n: u64, line: &mut String, report: &mut TradeGenerateReport) {
        // The market moves on every line, dirty or not.
        let step = self.rng.random_range(-20_000..=20_000);
        self.rate_e4 += step;
        if self.rate_e4 > RATE_MAX {
            self.rate_e4 = 2 * RATE_MAX - self.rate_e4;
        } else if self.rate_e4 < RATE_MIN {
            self.rate_e4 = 2 * RATE_MIN - self.rate_e4;
        }
        self.time_ms += self.rng.random_range(0..=self.max_gap_ms);

        let kind = if self.rng.random::<f64>() * 100.0 < self.dirty_pct {
            match self.rng.random_range(0..4) {
                0 if !self.recent.is_empty() => Kind::Duplicate,
                0 | 1 => Kind::Malformed,
                2 => Kind::InvalidField,
                _ => Kind::Oversell,
            }
        } else {
            Kind::Clean
        };
        let user = self.pick_user();
        let trade_id = format!("t{:x}-{n:09}", self.seed);
        match kind {
            Kind::Duplicate => {
                let i = self.rng.random_range(0..self.recent.len());
                line.push_str(&self.recent[i]);
                report.duplicates += 1;
            }
            Kind::Malformed => {
                report.malformed += 1;
                match self.rng.random_range(0..3) {
                    0 => {
                        self.write_trade(line, &trade_id, user, "BUY", 10_000, true);
                        let cut = line.len() / 2;
                        line.truncate(cut);
                    }
                    1 => line.push_str("not json at all"),
                    _ => line.push_str("[\"BUY\", 100, 4000]"),
                }
            }
            Kind::InvalidField => {
                report.invalid_fields += 1;
                self.write_trade(line, &trade_id, user, "BUY", 10_000, true);
                let (from, to) = match self.rng.random_range(0..6) {
                    0 => ("\"usd_amount\":\"100.00\"", "\"usd_amount\":\"100.001\""),
                    1 => ("\"side\":\"BUY\"", "\"side\":\"HOLD\""),
                    2 => ("\"usd_amount\":\"100.00\"", "\"usd_amount\":\"-100.00\""),
                    3 => ("\"executed_at\":\"", "\"executed_at\":\"28/11/2026 "),
                    4 => ("\"user_id\":", "\"client_id\":"),
                    _ => ("\"rate\":\"", "\"rate\":\"0.00001"),
                };
                *line = line.replacen(from, to, 1);
            }
            Kind::Oversell => {
                report.oversells += 1;
                self.active[user] = true;
                let over = self.balance_cents[user] + self.rng.random_range(1..=100_000);
                self.write_trade(line, &trade_id, user, "SELL", over, false);
                self.remember(line);
            }
            Kind::Clean => {
                report.valid += 1;
                self.active[user] = true;
                let balance = self.balance_cents[user];
                if balance == 0 || self.rng.random_bool(0.62) {
                    report.buys += 1;
                    let cents = self.buy_cents();
                    self.balance_cents[user] += cents;
                    let side = self.spell("BUY");
                    self.write_trade(line, &trade_id, user, side, cents, false);
                } else {
                    report.sells += 1;
                    let cents = if self.rng.random_bool(0.2) {
                        balance
                    } else {
                        let share = self.rng.random_range(0.1..1.0);
                        ((balance as f64 * share) as u64).clamp(1, balance)
                    };
                    self.balance_cents[user] -= cents;
                    let side = self.spell("SELL");
                    self.write_trade(line, &trade_id, user, side, cents, false);
                }
                self.remember(line);
            }
        }
    }

    /// 10 to 5,000 USD, log-uniform; half of them whole dollars.
    fn buy_cents(&mut self) -> u64 {
        let x: f64 = self.rng.random_range((1_000f64).ln()..(500_000f64).ln());
        let cents = x.exp() as u64;
        if self.rng.random_bool(0.5) {
            (cents / 100).max(1) * 100
        } else {
            cents.max(1)
        }
    }

    fn spell(&mut self, side: &'static str) -> &'static str {
        match (self.rng.random_range(0..10), side) {
            (0, "BUY") => "buy",
            (1, "BUY") => "Buy",
            (0, _) => "sell",
            (1, _) => "Sell",
            _ => side,
        }
    }

    fn remember(&mut self, line: &str) {
        if self.recent.len() < RECENT {
            self.recent.push(line.to_string());
        } else {
            let i = self.rng.random_range(0..RECENT);
            self.recent[i].clear();
            self.recent[i].push_str(line);
        }
    }

    /// One trade object. Amounts are JSON numbers a fifth of the time, never when `template`
    /// (the dirty kinds edit the canonical spelling).
    fn write_trade(
        &mut self,
        line: &mut String,
        trade_id: &str,
        user: usize,
        side: &str,
        cents: u64,
        template: bool,
    ) {
        let as_numbers = self.rng.random_bool(0.2) && !template;
        let channel = match self.rng.random_range(0..20) {
            0..=13 => Some("app"),
            14..=17 => Some("web"),
            18 => Some("api"),
            _ => None,
        };
        let when = DateTime::from_timestamp_millis(self.time_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        let (usd_whole, usd_frac) = (cents / 100, cents % 100);
        let (rate_whole, rate_frac) = (self.rate_e4 / 10_000, self.rate_e4 % 10_000);
        let _ = write!(
            line,
            "{{\"trade_id\":\"{trade_id}\",\"user_id\":\"u{user:06}\",\"side\":\"{side}\","
        );
        if as_numbers {
            // JSON numbers, written the way a client would (no padding zeros).
            let _ = write!(
                line,
                "\"usd_amount\":{},\"rate\":{},",
                trim_zeros(format!("{usd_whole}.{usd_frac:02}")),
                trim_zeros(format!("{rate_whole}.{rate_frac:04}"))
            );
        } else {
            let _ = write!(
                line,
                "\"usd_amount\":\"{usd_whole}.{usd_frac:02}\",\"rate\":\"{rate_whole}.{rate_frac:04}\","
            );
        }
        let _ = write!(line, "\"executed_at\":\"{when}\"");
        if let Some(channel) = channel {
            let _ = write!(line, ",\"channel\":\"{channel}\"");
        }
        line.push('}');
    }
}

fn trim_zeros(mut s: String) -> String {
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trades::Trade;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() -> io::Result<()> {
        let opts = TradeGenerateOptions {
            trades: 2_000,
            users: 50,
            seed: 7,
            dirty_pct: 10.0,
            span_days: 0,
        };
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        let ra = generate_trades(&opts, &mut a)?;
        let rb = generate_trades(&opts, &mut b)?;
        generate_trades(&TradeGenerateOptions { seed: 8, ..opts }, &mut c)?;
        assert_eq!(a, b);
        assert_eq!(ra, rb);
        assert_ne!(a, c);
        Ok(())
    }

    #[test]
    fn a_span_spreads_the_trades_over_its_days_up_to_the_same_end() -> io::Result<()> {
        let opts = TradeGenerateOptions {
            trades: 3_000,
            users: 20,
            seed: 3,
            dirty_pct: 0.0,
            span_days: 30,
        };
        let mut out = Vec::new();
        generate_trades(&opts, &mut out)?;
        let days: std::collections::BTreeSet<_> = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| Trade::parse(l.as_bytes()).ok())
            .map(|t| t.executed_at.date_naive())
            .collect();
        let (first, last) = (days.first().copied(), days.last().copied());
        assert_eq!(first, chrono::NaiveDate::from_ymd_opt(2026, 10, 29));
        assert!(
            last.is_some_and(|l| l
                >= chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap_or_default()
                && l <= chrono::NaiveDate::from_ymd_opt(2026, 12, 8).unwrap_or_default()),
            "{last:?}"
        );
        // about 100 trades a day: every day of the span has some
        assert!(days.len() >= 28, "{}", days.len());
        Ok(())
    }

    #[test]
    fn clean_output_is_all_valid_and_realistic() -> Result<(), Box<dyn std::error::Error>> {
        // GIVEN a clean file
        let opts = TradeGenerateOptions {
            trades: 5_000,
            users: 200,
            seed: 1,
            dirty_pct: 0.0,
            span_days: 0,
        };
        let mut out = Vec::new();
        let report = generate_trades(&opts, &mut out)?;
        // THEN every line parses, rates stay in range, buys outnumber sells
        assert_eq!(report.lines, 5_000);
        assert_eq!(report.valid, 5_000);
        assert!(
            report.buys > report.sells && report.sells > 1_000,
            "{report:?}"
        );
        let mut per_user = std::collections::HashMap::<std::sync::Arc<str>, u64>::new();
        for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let t = Trade::parse(line)?;
            assert!(t.rate >= 3900.into() && t.rate <= 4400.into(), "{}", t.rate);
            *per_user.entry(t.user_id).or_default() += 1;
        }
        // heavy and light users
        let max = per_user.values().max().copied().unwrap_or(0);
        let min = per_user.values().min().copied().unwrap_or(0);
        assert!(max > 20 * min.max(1), "max {max} min {min}");
        Ok(())
    }

    #[test]
    fn dirty_output_mixes_every_kind() -> io::Result<()> {
        let opts = TradeGenerateOptions {
            trades: 4_000,
            users: 30,
            seed: 3,
            dirty_pct: 20.0,
            span_days: 0,
        };
        let report = generate_trades(&opts, io::sink())?;
        assert_eq!(
            report.lines,
            report.valid
                + report.duplicates
                + report.malformed
                + report.invalid_fields
                + report.oversells
        );
        for count in [
            report.duplicates,
            report.malformed,
            report.invalid_fields,
            report.oversells,
        ] {
            assert!(count > 100, "{report:?}");
        }
        Ok(())
    }
}
