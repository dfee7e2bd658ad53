//! Splitting one load test over several generator processes: which share
//! of the connections and of the rate a segment runs, which connection ids
//! it uses, and the common start instant (`--start-at`).
//!
//! Pure arithmetic and parsing, no IO and no clock: the caller passes the
//! current wall-clock time where it matters. The orchestration itself
//! (starting the processes on many machines) is left to the engines people
//! already run: a Kubernetes Indexed Job or pdsh.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One part of a test split into `count` parts (`--segment INDEX/COUNT`);
/// `index` counts from 0, as Kubernetes' `JOB_COMPLETION_INDEX` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// This part's number, below `count`.
    pub index: u32,
    /// How many parts the test has, at least 1.
    pub count: u32,
}

/// The most segments one test may be split into: far more generator hosts
/// than anyone runs, and small enough that every share is computed exactly.
pub const MAX_SEGMENTS: u32 = 100_000;

impl Segment {
    /// The whole test in one part.
    pub const WHOLE: Segment = Segment { index: 0, count: 1 };

    /// Parses `INDEX/COUNT`.
    ///
    /// # Errors
    ///
    /// A message for people when the text is not two whole numbers, the
    /// count is 0 or above [`MAX_SEGMENTS`], or the index is not below it.
    ///
    /// ```
    /// # use echo_reactor::load::split::Segment;
    /// assert_eq!(Segment::parse("2/3"), Ok(Segment { index: 2, count: 3 }));
    /// assert!(Segment::parse("3/3").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Segment, String> {
        let usage = || format!("'{s}' is not INDEX/COUNT (for example 0/3)");
        let (index, count) = s.split_once('/').ok_or_else(usage)?;
        let index: u32 = index.trim().parse().map_err(|_| usage())?;
        let count: u32 = count.trim().parse().map_err(|_| usage())?;
        if count == 0 || count > MAX_SEGMENTS {
            return Err(format!(
                "segment count {count} is out of range (1 to {MAX_SEGMENTS})"
            ));
        }
        if index >= count {
            return Err(format!(
                "segment index {index} must be below the count {count} (indexes start at 0)"
            ));
        }
        Ok(Segment { index, count })
    }

    /// This segment's share of `total` items (connections): the first
    /// `total % count` segments take one more, so the shares add up to
    /// `total` exactly. Returns the first item's number and how many.
    ///
    /// ```
    /// # use echo_reactor::load::split::Segment;
    /// let shares: Vec<_> = (0..3).map(|i| Segment { index: i, count: 3 }.share(10)).collect();
    /// assert_eq!(shares, [(0, 4), (4, 3), (7, 3)]);
    /// ```
    pub fn share(&self, total: u64) -> (u64, u64) {
        let (count, index) = (u64::from(self.count), u64::from(self.index));
        let (base, extra) = (total / count, total % count);
        let first = index * base + index.min(extra);
        (first, base + u64::from(index < extra))
    }

    /// This segment's part of a total message rate: in proportion to its
    /// connections, so every connection of the test runs at the same pace
    /// and the parts add up to the whole.
    pub fn rate_share(&self, rate: f64, connections: u64) -> f64 {
        if connections == 0 {
            return 0.0;
        }
        let (_, own) = self.share(connections);
        rate * own as f64 / connections as f64
    }

    /// True for a test that is not split.
    pub fn is_whole(&self) -> bool {
        self.count == 1
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Parses `--start-at`: Unix seconds (`1767225600`, fractions allowed) or
/// an RFC 3339 time (`2026-01-01T00:00:00Z`, `2026-01-01T01:00:00.5+01:00`).
///
/// # Errors
///
/// A message for people when the text is neither, or names a time before
/// 1970 or too far ahead to be meant.
///
/// ```
/// # use echo_reactor::load::split::parse_start_at;
/// # use std::time::{Duration, UNIX_EPOCH};
/// let t = parse_start_at("2026-01-01T00:00:00Z").unwrap();
/// assert_eq!(t, UNIX_EPOCH + Duration::from_secs(1_767_225_600));
/// assert_eq!(parse_start_at("1767225600").unwrap(), t);
/// ```
pub fn parse_start_at(s: &str) -> Result<SystemTime, String> {
    let s = s.trim();
    let secs = if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        s.parse::<f64>()
            .map_err(|_| format!("'{s}' is not a Unix time in seconds"))?
    } else {
        rfc3339_seconds(s).ok_or_else(|| {
            format!("'{s}' is neither Unix seconds nor an RFC 3339 time (2026-01-01T00:00:00Z)")
        })?
    };
    // Year 2200: far beyond any test anyone schedules, and it keeps the
    // conversion to Duration exact and panic-free.
    const LATEST: f64 = 7_258_118_400.0;
    if !(0.0..=LATEST).contains(&secs) {
        return Err(format!("start time '{s}' is out of range (1970 to 2200)"));
    }
    Ok(UNIX_EPOCH + Duration::from_secs_f64(secs))
}

/// Seconds since the Unix epoch of an RFC 3339 date-time, or `None`.
fn rfc3339_seconds(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    // 60 allows a leap second, counted as the next second's start.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut fraction = 0.0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        fraction = format!("0.{}", &after_dot[..digits]).parse().ok()?;
        rest = &after_dot[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || !matches!(ob[0], b'+' | b'-') || ob[3] != b':' {
                return None;
            }
            let (oh, om) = (num_at(rest, 1)?, num_at(rest, 4)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let sign = if ob[0] == b'-' { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(secs as f64 + fraction)
}

fn num_at(s: &str, from: usize) -> Option<i64> {
    let part = s.get(from..from + 2)?;
    part.bytes()
        .all(|c| c.is_ascii_digit())
        .then(|| part.parse().ok())?
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`: shift the year to start in March so the leap day
/// comes last, then count 400-year eras).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An RFC 3339 time in UTC with microseconds, for reports
/// (`2026-01-01T00:00:00.250000Z`); times before 1970 read as 1970.
///
/// ```
/// # use echo_reactor::load::split::rfc3339;
/// # use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_millis(1_767_225_600_250);
/// assert_eq!(rfc3339(t), "2026-01-01T00:00:00.250000Z");
/// ```
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        d.subsec_micros()
    )
}

/// The date `days` after 1970-01-01: the inverse of `days_from_civil`
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Seconds since the Unix epoch, for reports (0 before 1970).
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_whole_and_do_not_overlap() {
        for count in 1..=7u32 {
            for total in [0u64, 1, 2, 6, 7, 100, 19_999] {
                let mut next = 0;
                for index in 0..count {
                    let (first, n) = Segment { index, count }.share(total);
                    assert_eq!(first, next, "segment {index}/{count} of {total}");
                    next += n;
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn rate_shares_add_up_to_the_rate() {
        let total: f64 = (0..3)
            .map(|i| Segment { index: i, count: 3 }.rate_share(1000.0, 10))
            .sum();
        assert!((total - 1000.0).abs() < 1e-9);
        assert_eq!(Segment::WHOLE.rate_share(500.0, 0), 0.0);
    }

    #[test]
    fn bad_segments_are_refused_with_a_reason() {
        for bad in ["", "1", "a/b", "-1/3", "0/0", "3/3", "0/100001", "1/2/3"] {
            assert!(Segment::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Segment::parse(" 0 / 1 "), Ok(Segment::WHOLE));
    }

    #[test]
    fn rfc3339_times_with_offsets_and_fractions_agree_with_unix_seconds() {
        let base = 1_767_225_600.0; // 2026-01-01T00:00:00Z
        let cases = [
            ("2026-01-01T00:00:00Z", base),
            ("2026-01-01T01:00:00+01:00", base),
            ("2025-12-31T19:00:00-05:00", base),
            ("2026-01-01T00:00:00.25Z", base + 0.25),
            ("2024-02-29T00:00:00Z", 1_709_164_800.0),
            ("1970-01-01T00:00:00Z", 0.0),
        ];
        for (text, want) in cases {
            let got = unix_seconds(parse_start_at(text).expect(text));
            assert!((got - want).abs() < 1e-6, "{text}: {got} != {want}");
        }
    }

    #[test]
    fn rfc3339_text_reads_back_as_the_same_time() {
        for secs in [
            0.0,
            951_782_400.5,
            1_709_164_800.0,
            1_767_225_599.999_999,
            4_102_444_800.0,
        ] {
            let t = UNIX_EPOCH + Duration::from_secs_f64(secs);
            let text = rfc3339(t);
            let back = unix_seconds(parse_start_at(&text).expect(&text));
            assert!((back - secs).abs() < 2e-6, "{secs} -> {text} -> {back}");
        }
    }

    #[test]
    fn malformed_or_absurd_start_times_are_refused() {
        for bad in [
            "",
            "soon",
            "2026-02-30T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+1:00",
            "2026-01-01T00:00:00.Z",
            "1e300",
            "99999999999",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(parse_start_at(bad).is_err(), "{bad}");
        }
    }
}
