//! Wall-clock time as the ledger stores it: milliseconds since the Unix epoch, shown as RFC 3339 UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch. A clock set before 1970 reads as 0 rather than failing a
/// payment: timestamps are informational, ordering comes from sequence numbers.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// `2026-11-24T14:28:26.123Z`.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// An instant a client wrote in RFC 3339 (`GET .../balance?as_of=`, the charge list's `created_*`
/// bounds), in whole milliseconds since the epoch, negative before 1970. The ledger keeps
/// milliseconds, so a finer fraction is remembered only as "not exactly this millisecond": a
/// bound that includes everything from `T` rounds up, "at or before `T`" rounds down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339Instant {
    /// The last millisecond at or before the instant.
    pub ms_floor: i64,
    /// Whether the instant is exactly `ms_floor` (no nonzero digit past the milliseconds).
    pub exact_ms: bool,
}

impl Rfc3339Instant {
    /// The first millisecond at or after the instant.
    pub fn ms_ceil(self) -> i64 {
        self.ms_floor + i64::from(!self.exact_ms)
    }
}

/// Parses RFC 3339's `date-time` (section 5.6): `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`,
/// `T` and `Z` in either case, any number of fraction digits, a leap second (`:60`) counted as
/// the second after `:59`. `None` for anything else, including days a month does not have.
pub fn parse_rfc3339(text: &str) -> Option<Rfc3339Instant> {
    let b = text.as_bytes();
    let number = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && matches!(b.get(10), Some(b'T' | b't')) && at(13, b':')) {
        return None;
    }
    if !at(16, b':') {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    let (hour, minute, second) = (number(11, 2)?, number(14, 2)?, number(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let (mut ms, mut exact_ms) = (0i64, true);
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, d) in fraction.bytes().take(digits).enumerate() {
            if i < 3 {
                ms += i64::from(d - b'0') * [100, 10, 1][i];
            } else if d != b'0' {
                exact_ms = false;
            }
        }
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digit = |d: &u8| d.is_ascii_digit().then(|| i64::from(d - b'0'));
            let (h, m) = (digit(h1)? * 10 + digit(h2)?, digit(m1)? * 10 + digit(m2)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_minutes * 60;
    Some(Rfc3339Instant {
        ms_floor: seconds * 1000 + ms,
        exact_ms,
    })
}

/// The first and the last millisecond RFC 3339 can write (four-digit years):
/// 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z.
pub const RFC3339_MS_MIN: i64 = -62_167_219_200_000;
pub const RFC3339_MS_MAX: i64 = 253_402_300_799_999;

/// [`rfc3339_ms`] for any instant of the years 0000 to 9999, before 1970 too (an `as_of` a
/// client asked for is shown back as it asked). Instants outside those years (an offset can
/// push a date just past them) are shown as the nearest one RFC 3339 can write: each is before,
/// or after, everything the ledger holds, so the answer is the same.
pub fn rfc3339_ms_signed(unix_ms: i64) -> String {
    let unix_ms = unix_ms.clamp(RFC3339_MS_MIN, RFC3339_MS_MAX);
    let (days, ms_of_day) = (
        unix_ms.div_euclid(86_400_000),
        unix_ms.rem_euclid(86_400_000),
    );
    let (year, month, day) = civil_from_days(days);
    let (seconds, ms) = (ms_of_day / 1000, ms_of_day % 1000);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_with_offsets_fractions_and_both_cases() {
        let at = |text: &str| parse_rfc3339(text).map(|i| (i.ms_floor, i.exact_ms));
        assert_eq!(at("1970-01-01T00:00:00Z"), Some((0, true)));
        assert_eq!(
            at("2026-11-18T11:06:40.123Z"),
            Some((1_795_000_000_123, true))
        );
        assert_eq!(
            at("2026-11-18t12:06:40.1230z"),
            Some((1_795_003_600_123, true))
        );
        assert_eq!(
            at("2026-11-18T12:06:40.1230+01:00"),
            Some((1_795_000_000_123, true))
        );
        assert_eq!(
            at("2026-11-18t11:06:40.1234z"),
            Some((1_795_000_000_123, false))
        );
        assert_eq!(at("1969-12-31T23:59:59.999Z"), Some((-1, true)));
        assert_eq!(at("1969-12-31T23:59:59.9995-00:00"), Some((-1, false)));
        assert_eq!(at("2016-12-31T23:59:60Z"), at("2017-01-01T00:00:00Z"));
        assert_eq!(
            at("0001-01-01T00:00:00+23:59").map(|(ms, _)| ms < 0),
            Some(true)
        );
        for bad in [
            "",
            "2026-11-18",
            "2026-11-18T11:06:40",
            "2026-11-18 11:06:40Z",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-18T24:00:00Z",
            "2026-11-18T11:06:40.Z",
            "2026-11-18T11:06:40+0100",
            "2026-11-18T11:06:40+24:00",
            "+2026-11-18T11:06:40Z",
            "2026-11-18T11:06:40Z ",
            "２026-11-18T11:06:40Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
        assert_eq!(at("2024-02-29T00:00:00Z").map(|(_, e)| e), Some(true));
    }

    #[test]
    fn signed_milliseconds_format_like_rfc3339_ms_and_parse_back() {
        for ms in [
            0i64,
            1,
            999,
            951_782_400_000,
            1_795_000_000_123,
            RFC3339_MS_MAX,
        ] {
            assert_eq!(rfc3339_ms_signed(ms), rfc3339_ms(ms as u64));
        }
        assert_eq!(rfc3339_ms_signed(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms_signed(i64::MIN), "0000-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_ms_signed(RFC3339_MS_MIN),
            "0000-01-01T00:00:00.000Z"
        );
        for ms in [
            -1i64,
            -86_400_000,
            -62_135_596_800_000,
            -62_167_219_200_000,
            951_782_400_000,
        ] {
            let text = rfc3339_ms_signed(ms);
            let back = parse_rfc3339(&text).expect(&text);
            assert_eq!((back.ms_floor, back.exact_ms), (ms, true), "{text}");
        }
        assert_eq!(rfc3339_ms_signed(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            rfc3339_ms_signed(-62_135_596_800_000),
            "0001-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn formats_rfc3339_utc_with_millis() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
    }
}
