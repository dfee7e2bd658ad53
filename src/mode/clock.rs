//! The clock services' answers, RFC 867 daytime and RFC 868 time, as pure
//! functions of a Unix time in seconds, plus the one place that reads the
//! wall clock.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds from 1900-01-01 (RFC 868's epoch) to 1970-01-01.
const SECS_1900_TO_1970: u64 = 2_208_988_800;

/// The longest daytime line, CRLF included: "Wednesday, September 30, 2026
/// 23:59:59-UTC\r\n" is 44 bytes; a UDP request this long always gets an
/// answer without `--udp-allow-amplification`.
pub const DAYTIME_MAX: usize = 48;

/// The wall clock, in whole seconds since 1970. Before 1970 (a broken
/// clock) reads as 1970.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RFC 868: seconds since 1900-01-01 00:00 UTC, big-endian, in 32 bits.
/// The count wraps in 2036, as every RFC 868 implementation does; clients
/// are expected to know.
pub fn time_bytes(unix: u64) -> [u8; 4] {
    let since_1900 = unix.wrapping_add(SECS_1900_TO_1970) as u32;
    since_1900.to_be_bytes()
}

/// RFC 867 leaves the format free and suggests
/// `Weekday, Month Day, Year HH:MM:SS-Zone`; this is that, in UTC, ending
/// in CRLF. Writes into `out` and returns the length, or 0 when `out` is
/// too short for the line ([`DAYTIME_MAX`] always suffices).
pub fn daytime_line(unix: u64, out: &mut [u8]) -> usize {
    const WEEKDAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    // Written in place: no allocation, and a buffer too small for the
    // line gets none of it (a cut date would mislead).
    let mut cursor = std::io::Cursor::new(out);
    let written = write!(
        cursor,
        "{}, {} {}, {} {:02}:{:02}:{:02}-UTC\r\n",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    match written {
        Ok(()) => cursor.position() as usize,
        Err(_) => 0,
    }
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31) in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(unix: u64) -> String {
        let mut out = [0u8; DAYTIME_MAX];
        let n = daytime_line(unix, &mut out);
        String::from_utf8(out[..n].to_vec()).unwrap_or_default()
    }

    #[test]
    fn daytime_at_known_instants() {
        assert_eq!(line(0), "Thursday, January 1, 1970 00:00:00-UTC\r\n");
        // 2026-11-22 23:45:07 UTC.
        assert_eq!(
            line(1_795_391_107),
            "Sunday, November 22, 2026 23:45:07-UTC\r\n"
        );
        // A leap day.
        assert_eq!(
            line(951_782_400),
            "Tuesday, February 29, 2000 00:00:00-UTC\r\n"
        );
    }

    #[test]
    fn daytime_lines_fit_and_are_printable() {
        // Every day of a few years, at the longest time of day.
        for day in 20_000..21_500u64 {
            let l = line(day * 86_400 + 86_399);
            assert!(l.len() <= DAYTIME_MAX, "{l:?}");
            assert!(l.ends_with("\r\n"));
            assert!(l.trim_end().bytes().all(|b| (0x20..=0x7e).contains(&b)));
        }
    }

    #[test]
    fn time_counts_from_1900() {
        assert_eq!(time_bytes(0), 2_208_988_800u32.to_be_bytes());
        // RFC 868's own example: 2,398,291,200 is 1976-01-01 00:00 UTC.
        assert_eq!(time_bytes(189_302_400), 2_398_291_200u32.to_be_bytes());
    }
}
