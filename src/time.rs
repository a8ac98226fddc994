//! Dates as mail people read them: RFC 3339 in spool records, RFC 5322 in headers and DSNs,
//! `HH:MM:SS` delays in log lines. Everything is UTC; no time-zone database is needed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a timestamp did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an RFC 3339 UTC timestamp (expected e.g. 2026-11-22T04:25:00.123456Z)")]
pub struct TimeError {
    /// The refused text.
    pub input: String,
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

struct Parts {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    micros: u32,
    weekday: usize,
}

fn split(t: SystemTime) -> Parts {
    let (secs, micros) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_micros()),
        Err(_) => (0, 0),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u64;
    let (year, month, day) = civil_from_days(days);
    Parts {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem / 60 % 60,
        second: rem % 60,
        micros,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as usize,
    }
}

/// `2026-11-22T04:25:00.123456Z`: the form spool records store.
pub fn rfc3339(t: SystemTime) -> String {
    let p = split(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        p.year, p.month, p.day, p.hour, p.minute, p.second, p.micros
    )
}

/// Parses what [`rfc3339`] writes (fraction optional, `Z` required).
pub fn parse_rfc3339(input: &str) -> Result<SystemTime, TimeError> {
    let bad = || TimeError {
        input: input.chars().take(64).collect(),
    };
    let s = input.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = s.split_once('T').ok_or_else(bad)?;
    let num = |t: &str, len: usize| -> Result<u64, TimeError> {
        if t.len() != len || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    let mut d = date.split('-');
    let (y, mo, da) = (
        num(d.next().ok_or_else(bad)?, 4)?,
        num(d.next().ok_or_else(bad)?, 2)?,
        num(d.next().ok_or_else(bad)?, 2)?,
    );
    if d.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return Err(bad());
    }
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (time, None),
    };
    let mut t = hms.split(':');
    let (h, mi, se) = (
        num(t.next().ok_or_else(bad)?, 2)?,
        num(t.next().ok_or_else(bad)?, 2)?,
        num(t.next().ok_or_else(bad)?, 2)?,
    );
    if t.next().is_some() || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    let micros = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let padded = format!("{f:0<9}");
            padded.parse::<u64>().map_err(|_| bad())? / 1000
        }
        Some(_) => return Err(bad()),
    };
    let days = days_from_civil(y as i64, mo as u32, da as u32);
    if days < 0 {
        return Err(bad());
    }
    let secs = days as u64 * 86_400 + h * 3600 + mi * 60 + se;
    // A leap second at the very end of 9999 rolls into year 10000, which `rfc3339` cannot
    // write back in four digits: a record holding it would not survive its next save.
    if secs >= days_from_civil(10_000, 1, 1) as u64 * 86_400 {
        return Err(bad());
    }
    Ok(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
}

/// `Sun, 22 Nov 2026 04:25:00 +0000`: the RFC 5322 date of headers and DSN fields.
pub fn rfc5322(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let p = split(t);
    format!(
        "{}, {} {} {:04} {:02}:{:02}:{:02} +0000",
        DAYS[p.weekday],
        p.day,
        MONTHS[(p.month - 1) as usize],
        p.year,
        p.hour,
        p.minute,
        p.second
    )
}

/// `Sun Nov 22 04:25:00 2026`: C's `asctime` layout in UTC, as an mbox `From ` line carries it.
pub fn asctime(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let p = split(t);
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {:04}",
        DAYS[p.weekday],
        MONTHS[(p.month - 1) as usize],
        p.day,
        p.hour,
        p.minute,
        p.second,
        p.year
    )
}

/// A duration as sendmail's `delay=` shows it: `HH:MM:SS`, with `D+` in front past a day.
pub fn delay(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}+{h:02}:{m:02}:{sec:02}")
    } else {
        format!("{h:02}:{m:02}:{sec:02}")
    }
}

/// Serde adapter: `SystemTime` as an RFC 3339 string.
pub mod serde_rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the RFC 3339 form.
    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*t))
    }

    /// Reads the RFC 3339 form.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

/// Serde adapter: `Option<SystemTime>` as an RFC 3339 string or null.
pub mod serde_rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the RFC 3339 form or null.
    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }

    /// Reads the RFC 3339 form or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| super::parse_rfc3339(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_format_as_expected() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_321_500); // 2026-11-22 04:25:00 UTC
        assert_eq!(rfc5322(t), "Sun, 22 Nov 2026 04:25:00 +0000");
        assert_eq!(rfc3339(t), "2026-11-22T04:25:00.000000Z");
        assert_eq!(rfc5322(UNIX_EPOCH), "Thu, 1 Jan 1970 00:00:00 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn rfc3339_round_trips_to_the_microsecond() {
        for secs in [0u64, 951_782_400, 1_795_321_500, 4_102_444_800] {
            let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(123_456);
            assert_eq!(parse_rfc3339(&rfc3339(t)).unwrap(), t);
        }
        assert_eq!(
            parse_rfc3339("2026-11-22T04:25:00Z").unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_795_321_500)
        );
    }

    #[test]
    fn malformed_timestamps_are_refused() {
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22T04:25:00",
            "2026-13-22T04:25:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T04:25:00.Z",
            "26-11-22T04:25:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn fuzz_regressions_every_accepted_timestamp_formats_back_to_one_that_parses() {
        // Found by fuzz/spool_record: 23:59:60 on 9999-12-31 is 10000-01-01T00:00:00Z.
        for bad in ["9999-12-31T23:59:60Z", "9999-12-31T23:59:60.9Z"] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["9999-12-31T23:59:59.999999Z", "2016-12-31T23:59:60Z"] {
            let t = parse_rfc3339(good).unwrap();
            assert_eq!(parse_rfc3339(&rfc3339(t)).unwrap(), t, "{good}");
        }
    }

    #[test]
    fn delays_read_like_sendmail() {
        assert_eq!(delay(Duration::from_secs(3)), "00:00:03");
        assert_eq!(
            delay(Duration::from_secs(18 * 3600 + 16 * 60 + 37)),
            "18:16:37"
        );
        assert_eq!(delay(Duration::from_secs(86_400 * 5 + 61)), "5+00:01:01");
    }
}
