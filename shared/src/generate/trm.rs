//! `trm` records: the official COP per USD rate as the open-data portal publishes it.
//!
//! The regulator certifies one rate each business day (Monday to Friday, Colombian public
//! holidays excepted), and it is in force from the next day until the next business day, both
//! included: Monday's rate covers Tuesday; Friday's covers Saturday to Monday, or to Tuesday when
//! that Monday is a holiday. So the clean records of a file tile the calendar without a gap or an
//! overlap, starting with the rate of 2024-12-31 (in force 2025-01-01 and 2025-01-02). Each clean
//! record covers the next interval; a dirty one does not use up its interval, so the accepted
//! rows are gapless whatever the dirty share. Values are a random walk of ±30 COP a day within
//! 3,900–4,300 COP, with two decimals.
//!
//! The file's dialect varies with the seed as real exports do: the header in the portal's upper
//! case, or lower or capitalised; a UTF-8 byte-order mark on half the UTF-8 files; each record's
//! dates as `2025-05-10`, `2025-05-10T00:00:00.000` (the portal's own) or `10/05/2025`. Records
//! are ASCII (but for a few dirty values), so the first one carries no accent, unlike the other
//! datasets', and no record is made `invalid_encoding`: the decoder would have nothing to tell
//! the encodings apart by.

use rand::Rng;

use super::format::*;
use super::vocab::*;
use super::{Col, Defect, Gen, TextEncoding};

/// The portal's header.
pub(super) const TRM_HEADER: &[&str] = &["VALOR", "UNIDAD", "VIGENCIADESDE", "VIGENCIAHASTA"];
const TRM_HEADER_LOWER: &[&str] = &["valor", "unidad", "vigenciadesde", "vigenciahasta"];
const TRM_HEADER_CAPITALISED: &[&str] = &["Valor", "Unidad", "VigenciaDesde", "VigenciaHasta"];

pub(super) const TRM_DEFECTS: &[(Defect, &str)] = &[
    (Defect::Missing(Col::Valor), "missing_required:valor"),
    (
        Defect::Missing(Col::VigenciaDesde),
        "missing_required:vigenciadesde",
    ),
    (Defect::InvalidNumber(Col::Valor), "invalid_number:valor"),
    (Defect::OutOfRange(Col::Valor), "out_of_range:valor"),
    (Defect::InvalidEnum(Col::Unidad), "invalid_enum:unidad"),
    (
        Defect::InvalidDate(Col::VigenciaHasta),
        "invalid_date:vigenciahasta",
    ),
    (Defect::InvalidInterval, "invalid_interval"),
    (Defect::OverlappingInterval, "overlapping_interval"),
    (Defect::Ragged, "ragged_row"),
    (Defect::DuplicateKey, "duplicate_key"),
];

/// Most records of one file: a million business days end in the 59th century, far from the
/// date parser's year 9999.
pub(super) const TRM_MAX_ROWS: u64 = 1_000_000;

/// Days since 1970-01-01 of 2024-12-31, the business day whose rate opens every file.
const FIRST_CERTIFIED: i64 = 20_088;

/// Colombian public holidays of 2025–2027 (Ley 51 de 1983 and the Easter-based feasts), as
/// year, month, day, sorted. Later years have no holidays: weekends alone break their weeks.
const HOLIDAYS: &[(u64, u64, u64)] = &[
    (2025, 1, 1),
    (2025, 1, 6),
    (2025, 3, 24),
    (2025, 4, 17),
    (2025, 4, 18),
    (2025, 5, 1),
    (2025, 6, 2),
    (2025, 6, 23),
    (2025, 6, 30),
    (2025, 7, 20),
    (2025, 8, 7),
    (2025, 8, 18),
    (2025, 10, 13),
    (2025, 11, 3),
    (2025, 11, 17),
    (2025, 12, 8),
    (2025, 12, 25),
    (2026, 1, 1),
    (2026, 1, 12),
    (2026, 3, 23),
    (2026, 4, 2),
    (2026, 4, 3),
    (2026, 5, 1),
    (2026, 5, 18),
    (2026, 6, 8),
    (2026, 6, 15),
    (2026, 6, 29),
    (2026, 7, 20),
    (2026, 8, 7),
    (2026, 8, 17),
    (2026, 10, 12),
    (2026, 11, 2),
    (2026, 11, 16),
    (2026, 12, 8),
    (2026, 12, 25),
    (2027, 1, 1),
    (2027, 1, 11),
    (2027, 3, 22),
    (2027, 3, 25),
    (2027, 3, 26),
    (2027, 5, 1),
    (2027, 5, 10),
    (2027, 5, 31),
    (2027, 6, 7),
    (2027, 7, 5),
    (2027, 7, 20),
    (2027, 8, 7),
    (2027, 8, 16),
    (2027, 10, 18),
    (2027, 11, 1),
    (2027, 11, 15),
    (2027, 12, 8),
    (2027, 12, 25),
];

/// Whether the rate is certified on `day` (days since 1970-01-01).
pub(super) fn is_business_day(day: i64) -> bool {
    // 1970-01-01 was a Thursday: day 0 is weekday 3 counting from Monday = 0.
    let weekday = (day + 3).rem_euclid(7);
    weekday < 5 && HOLIDAYS.binary_search(&civil_from_days(day)).is_err()
}

/// The rates of one file so far.
pub(super) struct TrmState {
    /// The business day whose rate the next clean record carries.
    certified: i64,
    /// The current rate, in hundredths of a peso.
    cents: u64,
    /// The interval of the last clean record.
    last: Option<(i64, i64)>,
    /// The interval of the last clean record that covers several days.
    last_long: Option<(i64, i64)>,
}

impl TrmState {
    pub(super) fn new() -> TrmState {
        TrmState {
            certified: FIRST_CERTIFIED,
            cents: 0,
            last: None,
            last_long: None,
        }
    }

    /// Whether an `overlapping_interval` record can be written: it needs an accepted interval
    /// of several days to start inside of, so that it never repeats an accepted key.
    pub(super) fn can_overlap(&self) -> bool {
        self.last_long.is_some()
    }

    /// The days the next clean record is in force.
    fn next_interval(&self) -> (i64, i64) {
        let mut until = self.certified + 1;
        while !is_business_day(until) {
            until += 1;
        }
        (self.certified + 1, until)
    }
}

/// How the dates of a record are written.
#[derive(Clone, Copy)]
enum DateStyle {
    Iso,
    IsoMidnight,
    DayFirst,
}

impl Gen {
    /// Decides the file's byte-order mark and header case; returns whether it has a BOM and
    /// its header.
    pub(super) fn trm_file_style(
        &mut self,
        encoding: TextEncoding,
    ) -> (bool, &'static [&'static str]) {
        self.trm.cents = self.rng.random_range(400_000..=420_000u64);
        let header = match self.rng.random_range(0..4u32) {
            0 | 1 => TRM_HEADER,
            2 => TRM_HEADER_LOWER,
            _ => TRM_HEADER_CAPITALISED,
        };
        let bom = encoding == TextEncoding::Utf8 && self.rng.random_bool(0.5);
        (bom, header)
    }

    pub(super) fn trm(&mut self, defect: Option<Defect>) -> Option<usize> {
        let upcoming = self.trm.next_interval();
        let (from, to) = match defect {
            Some(Defect::DuplicateKey) => self.trm.last.unwrap_or(upcoming),
            Some(Defect::OverlappingInterval) => match self.trm.last_long {
                // From a day inside an accepted interval that is not its first: a new key.
                Some((first, last)) => (self.rng.random_range(first + 1..=last), last),
                None => upcoming,
            },
            Some(Defect::InvalidInterval) => {
                (upcoming.0, upcoming.0 - self.rng.random_range(1..=3i64))
            }
            _ => upcoming,
        };
        if defect.is_none() {
            self.trm_walk();
        }

        match defect {
            Some(Defect::Missing(Col::Valor)) => push_blank(&mut self.rng, &mut self.line),
            Some(Defect::InvalidNumber(Col::Valor)) => {
                push_bad_number(&mut self.rng, &mut self.line, self.fmt)
            }
            Some(Defect::OutOfRange(Col::Valor)) => {
                if self.rng.random_bool(0.5) {
                    let zeros = self.rng.random_range(0..3u32);
                    push_decimal(&mut self.line, self.fmt, false, 0, zeros, false);
                } else {
                    push_decimal(&mut self.line, self.fmt, true, self.trm.cents, 2, false);
                }
            }
            _ => {
                let group = self.rng.random_range(0..4u32) == 0;
                push_decimal(&mut self.line, self.fmt, false, self.trm.cents, 2, group);
            }
        }
        self.sep();
        self.push_pick(if defect == Some(Defect::InvalidEnum(Col::Unidad)) {
            BAD_CURRENCY
        } else {
            CURRENCY_SPELLINGS
        });
        self.sep();
        let style = match self.rng.random_range(0..10u32) {
            0..=3 => DateStyle::IsoMidnight,
            4..=6 => DateStyle::Iso,
            _ => DateStyle::DayFirst,
        };
        if defect != Some(Defect::Missing(Col::VigenciaDesde)) {
            self.trm_date(from, style);
        }
        let last_sep = self.line.len();
        self.sep();
        match defect {
            Some(Defect::InvalidDate(Col::VigenciaHasta)) => {
                if self.rng.random_bool(0.5) {
                    push_bad_date(&mut self.rng, &mut self.line, false);
                } else {
                    // A time of day other than midnight: not a date, never truncated to one.
                    self.trm_date(to, DateStyle::Iso);
                    self.line.push_str("T13:45:00.000");
                }
            }
            _ => self.trm_date(to, style),
        }
        self.ragged(defect, last_sep, TRM_HEADER.len());

        self.key.clear();
        push_u64(&mut self.key, from as u64);
        if defect.is_none() {
            self.trm.last = Some((from, to));
            if to > from {
                self.trm.last_long = Some((from, to));
            }
            self.trm.certified = to;
        }
        None
    }

    /// The next day's rate: a step of up to ±30 COP, reflected back into 3,900–4,300 COP.
    fn trm_walk(&mut self) {
        const LOW: u64 = 390_000;
        const HIGH: u64 = 430_000;
        let step = self.rng.random_range(0..=6_000u64);
        let moved = (self.trm.cents + step).saturating_sub(3_000);
        self.trm.cents = if moved > HIGH {
            2 * HIGH - moved
        } else if moved < LOW {
            2 * LOW - moved
        } else {
            moved
        };
    }

    fn trm_date(&mut self, day: i64, style: DateStyle) {
        let (y, m, d) = civil_from_days(day);
        match style {
            DateStyle::Iso | DateStyle::IsoMidnight => {
                push_u64(&mut self.line, y);
                self.line.push('-');
                push_padded(&mut self.line, m, 2);
                self.line.push('-');
                push_padded(&mut self.line, d, 2);
                if let DateStyle::IsoMidnight = style {
                    self.line.push_str("T00:00:00.000");
                }
            }
            DateStyle::DayFirst => {
                push_padded(&mut self.line, d, 2);
                self.line.push('/');
                push_padded(&mut self.line, m, 2);
                self.line.push('/');
                push_u64(&mut self.line, y);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Days, NaiveDate, Weekday};

    fn days(d: NaiveDate) -> i64 {
        i64::from(crate::parse::days_since_epoch(d))
    }

    /// The holidays of a year by the rules themselves: fixed feasts, feasts moved to the next
    /// Monday (Ley 51 de 1983), and the Easter-based ones (Gauss/Meeus Easter).
    fn holidays_by_rule(y: i32) -> Vec<(u64, u64, u64)> {
        let (a, b, c) = (y % 19, y / 100, y % 100);
        let (d, e) = (b / 4, b % 4);
        let g = (8 * b + 13) / 25;
        let h = (19 * a + b - d - g + 15) % 30;
        let (i, k) = (c / 4, c % 4);
        let l = (32 + 2 * e + 2 * i - h - k) % 7;
        let m = (a + 11 * h + 22 * l) / 451;
        let month = (h + l - 7 * m + 114) / 31;
        let day = (h + l - 7 * m + 114) % 31 + 1;
        let easter = NaiveDate::from_ymd_opt(y, month as u32, day as u32).unwrap_or_default();
        let date = |m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default();
        let monday = |d: NaiveDate| {
            let ahead = (7 - d.weekday().num_days_from_monday()) % 7;
            d + Days::new(u64::from(ahead))
        };
        let after = |n| easter + Days::new(n);
        let mut all = vec![
            date(1, 1),
            date(5, 1),
            date(7, 20),
            date(8, 7),
            date(12, 8),
            date(12, 25),
            easter - Days::new(3),
            easter - Days::new(2),
        ];
        for moved in [
            (1, 6),
            (3, 19),
            (6, 29),
            (8, 15),
            (10, 12),
            (11, 1),
            (11, 11),
        ] {
            all.push(monday(date(moved.0, moved.1)));
        }
        for n in [39, 60, 68] {
            all.push(monday(after(n)));
        }
        let mut out: Vec<(u64, u64, u64)> = all
            .into_iter()
            .map(|d| (d.year() as u64, u64::from(d.month()), u64::from(d.day())))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    #[test]
    fn the_holiday_table_follows_the_law() {
        let by_rule: Vec<_> = (2025..=2027).flat_map(holidays_by_rule).collect();
        assert_eq!(HOLIDAYS, by_rule.as_slice());
    }

    #[test]
    fn business_days_skip_weekends_and_holidays() {
        let day = |y, m, d| days(NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default());
        assert_eq!(day(2024, 12, 31), FIRST_CERTIFIED);
        assert!(is_business_day(day(2025, 5, 9))); // Friday
        assert!(!is_business_day(day(2025, 5, 10))); // Saturday
        assert!(!is_business_day(day(2025, 5, 11))); // Sunday
        assert!(!is_business_day(day(2025, 4, 17))); // Holy Thursday
        assert!(!is_business_day(day(2025, 1, 1)));
        assert!(is_business_day(day(2028, 1, 3))); // past the table: a Monday is a Monday
    }

    #[test]
    fn a_friday_rate_runs_until_the_next_business_day() {
        // GIVEN the rate certified on Friday 2025-06-27, before the holiday Monday 2025-06-30
        let friday = days(NaiveDate::from_ymd_opt(2025, 6, 27).unwrap_or_default());
        let state = TrmState {
            certified: friday,
            ..TrmState::new()
        };
        // THEN it is in force from Saturday to Tuesday
        assert_eq!(state.next_interval(), (friday + 1, friday + 4));
        for d in friday + 1..friday + 4 {
            assert!(!is_business_day(d));
        }
        let weekday = |d: i64| {
            NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|e| e.checked_add_days(Days::new(d as u64)))
                .map(|d| d.weekday())
        };
        assert_eq!(weekday(friday), Some(Weekday::Fri));
    }
}
