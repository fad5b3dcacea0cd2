//! The day intervals accepted so far in one file, for `overlapping_interval`.
//!
//! Accepted intervals never share a day, so in a map from first day to last day the only one
//! that can share a day with `[from, to]` is the one starting last on or before `to`: one
//! O(log n) lookup per row. Memory is bounded by the calendar, not by the input: intervals of
//! whole days that never overlap, within the years 0–9999 the date parser accepts, number at
//! most 3.65 million; a TRM file holds one a business day, a few hundred a year.

use std::collections::BTreeMap;

/// Intervals of days (inclusive, days since 1970-01-01) accepted in one file.
#[derive(Debug, Default)]
pub struct IntervalSet {
    /// First day → last day; no two share a day.
    by_first: BTreeMap<i32, i32>,
}

impl IntervalSet {
    pub fn new() -> IntervalSet {
        IntervalSet::default()
    }

    /// The accepted interval that shares at least one day with `[from, to]`, if any.
    pub fn overlapping(&self, from: i32, to: i32) -> Option<(i32, i32)> {
        let (&first, &last) = self.by_first.range(..=to).next_back()?;
        (last >= from).then_some((first, last))
    }

    /// Accepts `[from, to]` unless it shares a day with an accepted interval, which is
    /// returned instead.
    pub fn insert(&mut self, from: i32, to: i32) -> Result<(), (i32, i32)> {
        match self.overlapping(from, to) {
            Some(other) => Err(other),
            None => {
                self.by_first.insert(from, to);
                Ok(())
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_first.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_first.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn adjacent_intervals_do_not_overlap() {
        // GIVEN Friday's rate, in force Saturday to Monday (days 10..=12)
        let mut s = IntervalSet::new();
        assert_eq!(s.insert(10, 12), Ok(()));
        // WHEN Tuesday's and the days before Saturday are accepted THEN nothing overlaps
        assert_eq!(s.insert(13, 13), Ok(()));
        assert_eq!(s.insert(9, 9), Ok(()));
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn touching_at_one_day_overlaps() {
        let mut s = IntervalSet::new();
        assert_eq!(s.insert(10, 12), Ok(()));
        assert_eq!(s.insert(12, 14), Err((10, 12)));
        assert_eq!(s.insert(8, 10), Err((10, 12)));
        assert_eq!(s.overlapping(13, 20), None);
    }

    #[test]
    fn nested_and_enclosing_intervals_overlap() {
        let mut s = IntervalSet::new();
        assert_eq!(s.insert(10, 20), Ok(()));
        assert_eq!(s.insert(12, 13), Err((10, 20)));
        assert_eq!(s.insert(5, 25), Err((10, 20)));
        assert_eq!(s.insert(10, 20), Err((10, 20)));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn an_interval_spanning_a_gap_between_two_others_overlaps_the_later_one() {
        let mut s = IntervalSet::new();
        assert_eq!(s.insert(1, 2), Ok(()));
        assert_eq!(s.insert(8, 9), Ok(()));
        assert_eq!(s.insert(3, 8), Err((8, 9)));
        assert_eq!(s.insert(3, 7), Ok(()));
    }

    proptest! {
        /// Whatever order intervals come in, each is accepted exactly when it shares no day
        /// with one accepted before it, and the set names an interval it really overlaps.
        #[test]
        fn answers_as_a_scan_of_every_accepted_interval(
            rows in proptest::collection::vec((0i32..60, 0i32..6), 0..80),
        ) {
            let mut set = IntervalSet::new();
            let mut accepted: Vec<(i32, i32)> = Vec::new();
            for (from, len) in rows {
                let to = from + len;
                let scan = accepted.iter().find(|(f, t)| *f <= to && from <= *t).copied();
                match set.insert(from, to) {
                    Ok(()) => {
                        prop_assert_eq!(scan, None);
                        accepted.push((from, to));
                    }
                    Err((f, t)) => {
                        prop_assert!(scan.is_some());
                        prop_assert!(accepted.contains(&(f, t)) && f <= to && from <= t);
                    }
                }
            }
            prop_assert_eq!(set.len(), accepted.len());
        }
    }
}
