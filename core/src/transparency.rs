//! The public transparency report: how many grants and withholds the vendor
//! logged, how many suspensions it raised and lifted, and how many misuse
//! cases were opened and closed, per period, counted from entry headers
//! alone.
//!
//! Headers are public (the ledger's tiles publish them), and a header's kind
//! is a function of its body that the fold enforces (`docs/ledger.md`), so
//! anyone holding the tiles of a signed checkpoint recomputes exactly these
//! numbers: no body, no key and no server is needed. What is counted, by
//! header kind:
//!
//! | count | kinds |
//! | --- | --- |
//! | grants | `grant` |
//! | withholds | `withhold` |
//! | suspensions raised | `suspension` (a proposal to a level above none) |
//! | suspensions lifted | `suspension_lift` (a proposal to level none) |
//! | cases opened | `signal` (every misuse signal opens a case) |
//! | cases closed | `case_closure` |
//!
//! An entry counts in the period holding its ledger time; periods are
//! calendar days, ISO weeks (from Monday), months, quarters or years, in UTC,
//! and the report covers `from ≤ time < to`. Pure: the caller reads the
//! headers (from a server or from files) and checks them against the
//! checkpoint.

use serde::Serialize;
use time::{Date, Month, OffsetDateTime, Time};

use crate::digest::Timestamp;
use crate::ledger::{EntryHeader, EntryKind};

/// The most periods one report lists (a century of weeks fits).
pub const MAX_PERIODS: usize = 10_000;

/// Why a report cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransparencyError {
    /// `from` is not before `to`.
    #[error("the report's start ({from}) must be before its end ({to})")]
    EmptyRange {
        /// The start.
        from: Timestamp,
        /// The end.
        to: Timestamp,
    },
    /// The range holds more periods than [`MAX_PERIODS`].
    #[error("{from} to {to} holds more than {MAX_PERIODS} periods of a {period}: choose a longer period")]
    TooManyPeriods {
        /// The start.
        from: Timestamp,
        /// The end.
        to: Timestamp,
        /// The period asked for.
        period: Period,
    },
    /// A time outside the calendar's range (before year -9999 or after 9999).
    #[error("{0} is outside the calendar this report can count in")]
    OutOfRange(i64),
}

/// The length of one row of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// A calendar day (UTC).
    Day,
    /// An ISO week, from Monday 00:00 UTC.
    Week,
    /// A calendar month.
    Month,
    /// A calendar quarter (January, April, July, October).
    Quarter,
    /// A calendar year.
    Year,
}

impl Period {
    /// The period's name, as the CLI and the JSON spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Quarter => "quarter",
            Period::Year => "year",
        }
    }

    /// The name of the period holding `start`: `2026-12-04`, `2026-W49`,
    /// `2026-12`, `2026-Q4` or `2026`.
    pub fn label(self, start: Timestamp) -> String {
        let Ok(d) = OffsetDateTime::from_unix_timestamp(start.unix()) else { return start.to_string() };
        let (y, m, day) = (d.year(), u8::from(d.month()), d.day());
        match self {
            Period::Day => format!("{y:04}-{m:02}-{day:02}"),
            Period::Week => {
                let (iso_year, week, _) = d.to_iso_week_date();
                format!("{iso_year:04}-W{week:02}")
            }
            Period::Month => format!("{y:04}-{m:02}"),
            Period::Quarter => format!("{y:04}-Q{}", (m - 1) / 3 + 1),
            Period::Year => format!("{y:04}"),
        }
    }

    /// The first day of the period holding `date`.
    fn start(self, date: Date) -> Option<Date> {
        match self {
            Period::Day => Some(date),
            Period::Week => date.checked_sub(time::Duration::days(i64::from(date.weekday().number_days_from_monday()))),
            Period::Month => Date::from_calendar_date(date.year(), date.month(), 1).ok(),
            Period::Quarter => {
                let first = (u8::from(date.month()) - 1) / 3 * 3 + 1;
                Date::from_calendar_date(date.year(), Month::try_from(first).ok()?, 1).ok()
            }
            Period::Year => Date::from_calendar_date(date.year(), Month::January, 1).ok(),
        }
    }

    /// The first day of the period after the one starting on `start`.
    fn next(self, start: Date) -> Option<Date> {
        match self {
            Period::Day => start.next_day(),
            Period::Week => start.checked_add(time::Duration::days(7)),
            Period::Month | Period::Quarter => {
                let months = if self == Period::Month { 1 } else { 3 };
                let index = i32::from(u8::from(start.month())) - 1 + months;
                let year = start.year() + index / 12;
                Date::from_calendar_date(year, Month::try_from(u8::try_from(index % 12 + 1).ok()?).ok()?, 1).ok()
            }
            Period::Year => Date::from_calendar_date(start.year() + 1, Month::January, 1).ok(),
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A period name that is none of [`Period`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown period {0:?}: use day, week, month, quarter or year")]
pub struct UnknownPeriod(pub String);

impl std::str::FromStr for Period {
    type Err = UnknownPeriod;
    fn from_str(s: &str) -> Result<Self, UnknownPeriod> {
        [Period::Day, Period::Week, Period::Month, Period::Quarter, Period::Year]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPeriod(s.chars().take(32).collect()))
    }
}

/// What one period (or the whole report) counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Decisions that let a release through.
    pub grants: u64,
    /// Decisions that withheld every newer release.
    pub withholds: u64,
    /// Suspensions proposed at a level above none.
    pub suspensions_raised: u64,
    /// Suspensions proposed lifted (to level none).
    pub suspensions_lifted: u64,
    /// Misuse signals, each of which opens a case.
    pub cases_opened: u64,
    /// Cases moved to closed.
    pub cases_closed: u64,
    /// Every entry in the period, of any kind.
    pub entries: u64,
}

impl Counts {
    fn add(&mut self, kind: EntryKind) {
        self.entries += 1;
        match kind {
            EntryKind::Grant => self.grants += 1,
            EntryKind::Withhold => self.withholds += 1,
            EntryKind::Suspension => self.suspensions_raised += 1,
            EntryKind::SuspensionLift => self.suspensions_lifted += 1,
            EntryKind::Signal => self.cases_opened += 1,
            EntryKind::CaseClosure => self.cases_closed += 1,
            _ => {}
        }
    }

    fn sum(&mut self, other: &Counts) {
        self.grants += other.grants;
        self.withholds += other.withholds;
        self.suspensions_raised += other.suspensions_raised;
        self.suspensions_lifted += other.suspensions_lifted;
        self.cases_opened += other.cases_opened;
        self.cases_closed += other.cases_closed;
        self.entries += other.entries;
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeriodCounts {
    /// Its first instant (inside the report's range).
    pub start: Timestamp,
    /// The instant after its last (inside the report's range).
    pub end: Timestamp,
    /// Whether the report's range starts or ends inside the period, so that
    /// the row counts only part of it.
    pub partial: bool,
    /// What it counts.
    #[serde(flatten)]
    pub counts: Counts,
}

/// Counts headers into periods, one header at a time (memory is the
/// periods', whatever the ledger's size).
#[derive(Debug, Clone)]
pub struct Tally {
    from: Timestamp,
    to: Timestamp,
    period: Period,
    rows: Vec<PeriodCounts>,
}

fn date_of(t: Timestamp) -> Result<Date, TransparencyError> {
    OffsetDateTime::from_unix_timestamp(t.unix()).map(|d| d.date()).map_err(|_| TransparencyError::OutOfRange(t.unix()))
}

fn midnight(d: Date) -> Timestamp {
    Timestamp::from_unix(d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp())
}

impl Tally {
    /// A tally of `from ≤ time < to` in periods of `period`; the first and
    /// last rows are cut to the range.
    pub fn new(from: Timestamp, to: Timestamp, period: Period) -> Result<Tally, TransparencyError> {
        if from >= to {
            return Err(TransparencyError::EmptyRange { from, to });
        }
        date_of(to)?;
        let mut rows = Vec::new();
        let mut day = period.start(date_of(from)?).ok_or(TransparencyError::OutOfRange(from.unix()))?;
        loop {
            let start = midnight(day).max(from);
            if start >= to {
                break;
            }
            if rows.len() == MAX_PERIODS {
                return Err(TransparencyError::TooManyPeriods { from, to, period });
            }
            let next = period.next(day).ok_or(TransparencyError::OutOfRange(to.unix()))?;
            let partial = midnight(day) < from || midnight(next) > to;
            rows.push(PeriodCounts { start, end: midnight(next).min(to), partial, counts: Counts::default() });
            day = next;
        }
        Ok(Tally { from, to, period, rows })
    }

    /// Counts one header (one outside the range counts nowhere).
    pub fn count(&mut self, header: &EntryHeader) {
        if header.time < self.from || header.time >= self.to {
            return;
        }
        let i = self.rows.partition_point(|r| r.end <= header.time);
        if let Some(row) = self.rows.get_mut(i) {
            row.counts.add(header.kind);
        }
    }

    /// The rows and their total.
    pub fn finish(self) -> Tallied {
        let mut total = Counts::default();
        for r in &self.rows {
            total.sum(&r.counts);
        }
        Tallied { from: self.from, to: self.to, period: self.period, periods: self.rows, total }
    }
}

/// A finished tally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tallied {
    /// The first instant counted.
    pub from: Timestamp,
    /// The instant after the last counted.
    pub to: Timestamp,
    /// The rows' length.
    pub period: Period,
    /// One row per period, in order, empty ones included.
    pub periods: Vec<PeriodCounts>,
    /// The rows summed.
    pub total: Counts,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::digest::Sha256Digest;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn header(kind: EntryKind, time: &str) -> EntryHeader {
        EntryHeader { kind, time: t(time), actor: None, tags: vec![], body_digest: Sha256Digest([0; 32]) }
    }

    #[test]
    fn periods_follow_the_calendar_and_are_cut_to_the_range() {
        let months = Tally::new(t("2026-01-15T00:00:00Z"), t("2026-04-02T00:00:00Z"), Period::Month).unwrap().finish();
        let starts: Vec<String> = months.periods.iter().map(|r| r.start.to_string()).collect();
        assert_eq!(
            starts,
            ["2026-01-15T00:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"]
        );
        assert_eq!(months.periods[3].end, t("2026-04-02T00:00:00Z"));
        let partial: Vec<bool> = months.periods.iter().map(|r| r.partial).collect();
        assert_eq!(partial, [true, false, false, true]);
        // 2026-12-03 is a Thursday: its week starts on Monday 2026-11-30.
        let weeks = Tally::new(t("2026-12-03T10:00:00Z"), t("2026-12-15T00:00:00Z"), Period::Week).unwrap().finish();
        let ends: Vec<String> = weeks.periods.iter().map(|r| r.end.to_string()).collect();
        assert_eq!(ends, ["2026-12-07T00:00:00Z", "2026-12-14T00:00:00Z", "2026-12-15T00:00:00Z"]);
        let quarters =
            Tally::new(t("2026-11-01T00:00:00Z"), t("2027-05-01T00:00:00Z"), Period::Quarter).unwrap().finish();
        let starts: Vec<String> = quarters.periods.iter().map(|r| r.start.to_string()).collect();
        assert_eq!(starts, ["2026-11-01T00:00:00Z", "2027-01-01T00:00:00Z", "2027-04-01T00:00:00Z"]);
        assert_eq!(Period::Week.label(weeks.periods[0].start), "2026-W49");
        assert_eq!(Period::Quarter.label(quarters.periods[0].start), "2026-Q4");
        let years = Tally::new(t("2025-06-01T00:00:00Z"), t("2027-01-01T00:00:00Z"), Period::Year).unwrap().finish();
        assert_eq!(years.periods.len(), 2);
    }

    #[test]
    fn each_count_comes_from_its_header_kind_only() {
        let mut tally = Tally::new(t("2026-12-01T00:00:00Z"), t("2026-12-03T00:00:00Z"), Period::Day).unwrap();
        for (kind, time) in [
            (EntryKind::Grant, "2026-12-01T00:00:00Z"),
            (EntryKind::Withhold, "2026-12-01T23:59:59Z"),
            (EntryKind::Suspension, "2026-12-02T01:00:00Z"),
            (EntryKind::SuspensionLift, "2026-12-02T02:00:00Z"),
            (EntryKind::Signal, "2026-12-02T03:00:00Z"),
            (EntryKind::Case, "2026-12-02T04:00:00Z"),
            (EntryKind::CaseClosure, "2026-12-02T05:00:00Z"),
            // Outside the range: counted nowhere.
            (EntryKind::Grant, "2026-11-30T23:59:59Z"),
            (EntryKind::Grant, "2026-12-03T00:00:00Z"),
        ] {
            tally.count(&header(kind, time));
        }
        let done = tally.finish();
        let day1 = Counts { grants: 1, withholds: 1, entries: 2, ..Counts::default() };
        let day2 = Counts {
            suspensions_raised: 1,
            suspensions_lifted: 1,
            cases_opened: 1,
            cases_closed: 1,
            entries: 5,
            ..Counts::default()
        };
        assert_eq!(done.periods.iter().map(|r| r.counts).collect::<Vec<_>>(), [day1, day2]);
        assert_eq!(done.total.entries, 7);
        assert_eq!(done.total.grants, 1);
    }

    #[test]
    fn a_range_that_is_empty_or_too_fine_is_refused() {
        let at = t("2026-12-01T00:00:00Z");
        assert!(matches!(Tally::new(at, at, Period::Day), Err(TransparencyError::EmptyRange { .. })));
        let far = t("2099-01-01T00:00:00Z");
        assert!(matches!(Tally::new(at, far, Period::Day), Err(TransparencyError::TooManyPeriods { .. })));
        assert!(Tally::new(Timestamp::from_unix(i64::MIN), far, Period::Year).is_err());
        assert!(Tally::new(at, Timestamp::from_unix(i64::MAX), Period::Year).is_err());
    }
}
