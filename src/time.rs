//! Wall-clock helpers: unix time, UTC civil dates, HTTP dates and log timestamps.
//!
//! Calendar math is Howard Hinnant's days-from-civil algorithm over the proleptic
//! Gregorian calendar, in `i64`, so it is exact for negative and far-future times.

use std::time::{SystemTime, UNIX_EPOCH};

const SECS_PER_DAY: i64 = 86_400;
const DAY_NAMES: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
const MONTH_NAMES: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Seconds since the unix epoch (negative if the clock is set before 1970).
pub fn now_unix() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// A UTC calendar date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Sunday .. 6 = Saturday
    pub weekday: u32,
}

/// Converts unix seconds to a UTC civil date; defined for every `i64`.
pub fn civil_from_unix(secs: i64) -> Civil {
    let days = secs.div_euclid(SECS_PER_DAY);
    let rem = secs.rem_euclid(SECS_PER_DAY); // 0..86400
                                             // |days| <= 1.07e14, so none of the arithmetic below can overflow.
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // 0..=146096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365, from March 1
    let mp = (5 * doy + 2) / 153; // 0..=11, March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month: month as u32,
        day: day as u32,
        hour: (rem / 3_600) as u32,
        minute: (rem % 3_600 / 60) as u32,
        second: (rem % 60) as u32,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

/// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(secs: i64) -> String {
    let mut out = Vec::with_capacity(29);
    write_http_date(secs, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends the IMF-fixdate for `secs` to `out` without intermediate allocations.
pub fn write_http_date(secs: i64, out: &mut Vec<u8>) {
    let c = civil_from_unix(secs);
    out.extend_from_slice(DAY_NAMES[c.weekday as usize % 7]);
    out.extend_from_slice(b", ");
    push2(out, c.day);
    out.push(b' ');
    out.extend_from_slice(MONTH_NAMES[(c.month as usize + 11) % 12]);
    out.push(b' ');
    push_year(out, c.year);
    out.push(b' ');
    push_time(out, &c);
    out.extend_from_slice(b" GMT");
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-27T20:50:04.123Z`.
pub fn log_timestamp(unix_millis: i64) -> String {
    let c = civil_from_unix(unix_millis.div_euclid(1_000));
    let ms = unix_millis.rem_euclid(1_000) as u32;
    let mut out = Vec::with_capacity(24);
    push_year(&mut out, c.year);
    out.push(b'-');
    push2(&mut out, c.month);
    out.push(b'-');
    push2(&mut out, c.day);
    out.push(b'T');
    push_time(&mut out, &c);
    out.push(b'.');
    out.push(b'0' + (ms / 100 % 10) as u8);
    push2(&mut out, ms % 100);
    out.push(b'Z');
    String::from_utf8_lossy(&out).into_owned()
}

fn push_time(out: &mut Vec<u8>, c: &Civil) {
    push2(out, c.hour);
    out.push(b':');
    push2(out, c.minute);
    out.push(b':');
    push2(out, c.second);
}

/// Two digits, zero-padded (`n` < 100).
fn push2(out: &mut Vec<u8>, n: u32) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

/// At least four digits, zero-padded, with a leading `-` for years before 0.
fn push_year(out: &mut Vec<u8>, year: i64) {
    if year < 0 {
        out.push(b'-');
    }
    let mut n = year.unsigned_abs();
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    while n > 0 {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = i.min(buf.len() - 4);
    out.extend_from_slice(&buf[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: u32, wd: u32) -> Civil {
        Civil {
            year,
            month,
            day,
            hour,
            minute,
            second,
            weekday: wd,
        }
    }

    #[test]
    fn civil_table() {
        let table = [
            (0, c(1970, 1, 1, 0, 0, 0, 4)),
            (784_111_777, c(1994, 11, 6, 8, 49, 37, 0)),
            (951_782_400, c(2000, 2, 29, 0, 0, 0, 2)),
            (4_107_542_400, c(2100, 3, 1, 0, 0, 0, 1)),
            (4_107_456_000, c(2100, 2, 28, 0, 0, 0, 0)),
            (1_735_689_599, c(2024, 12, 31, 23, 59, 59, 2)),
            (1_735_689_600, c(2025, 1, 1, 0, 0, 0, 3)),
            (1_709_164_800, c(2024, 2, 29, 0, 0, 0, 4)),
            (-1, c(1969, 12, 31, 23, 59, 59, 3)),
            (-86_400, c(1969, 12, 31, 0, 0, 0, 3)),
            (-86_401, c(1969, 12, 30, 23, 59, 59, 2)),
            (-2_208_988_800, c(1900, 1, 1, 0, 0, 0, 1)),
            (-62_167_219_200, c(0, 1, 1, 0, 0, 0, 6)),
            (-62_135_596_800, c(1, 1, 1, 0, 0, 0, 1)),
            (253_402_300_799, c(9999, 12, 31, 23, 59, 59, 5)),
            (1_795_801_207, c(2026, 11, 27, 17, 40, 7, 5)),
        ];
        for (secs, want) in table {
            assert_eq!(civil_from_unix(secs), want, "secs = {secs}");
        }
    }

    #[test]
    fn civil_extremes_do_not_panic() {
        for secs in [i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1] {
            let c = civil_from_unix(secs);
            assert!((1..=12).contains(&c.month));
            assert!((1..=31).contains(&c.day));
            assert!(c.hour < 24 && c.minute < 60 && c.second < 60 && c.weekday < 7);
            let _ = http_date(secs);
        }
        for ms in [i64::MIN, i64::MAX, -1] {
            let _ = log_timestamp(ms);
        }
    }

    #[test]
    fn civil_is_consistent_day_by_day() {
        // Walk 800 years day by day and check each day follows the previous one.
        let mut prev = civil_from_unix(-62_167_219_200 - SECS_PER_DAY);
        let mut secs = -62_167_219_200;
        for _ in 0..(800 * 366) {
            let cur = civil_from_unix(secs);
            assert_eq!(cur.weekday, (prev.weekday + 1) % 7);
            if cur.day == 1 {
                assert!(prev.day >= 28);
                assert_eq!(cur.month, prev.month % 12 + 1);
            } else {
                assert_eq!(
                    (cur.year, cur.month, cur.day),
                    (prev.year, prev.month, prev.day + 1)
                );
            }
            prev = cur;
            secs += SECS_PER_DAY;
        }
    }

    #[test]
    fn http_date_table() {
        let table = [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 GMT"),
            (1_735_689_599, "Tue, 31 Dec 2024 23:59:59 GMT"),
            (-1, "Wed, 31 Dec 1969 23:59:59 GMT"),
            (-62_135_596_800, "Mon, 01 Jan 0001 00:00:00 GMT"),
            (-62_198_755_200, "Fri, 01 Jan -0001 00:00:00 GMT"),
            (253_402_300_800, "Sat, 01 Jan 10000 00:00:00 GMT"),
        ];
        for (secs, want) in table {
            assert_eq!(http_date(secs), want, "secs = {secs}");
        }
    }

    #[test]
    fn write_http_date_appends() {
        let mut out = b"Date: ".to_vec();
        write_http_date(784_111_777, &mut out);
        assert_eq!(out, b"Date: Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn log_timestamp_table() {
        let table = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_795_801_207_123, "2026-11-27T17:40:07.123Z"),
            (951_782_400_009, "2000-02-29T00:00:00.009Z"),
            (1_735_689_599_999, "2024-12-31T23:59:59.999Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (-1_000, "1969-12-31T23:59:59.000Z"),
        ];
        for (ms, want) in table {
            assert_eq!(log_timestamp(ms), want, "ms = {ms}");
        }
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_unix() > 1_577_836_800);
    }
}
