//! A shape and range check for RFC 3339 timestamps (section 5.6), written by hand because the
//! daemon has no date crate:
//!
//! ```text
//! YYYY-MM-DD ("T" | "t") hh:mm:ss [ "." 1-9 digits ] ( "Z" | "z" | ("+" | "-") hh:mm )
//! ```
//!
//! The day must exist in its month (leap years included); seconds may be 60 (a leap second).
//! A time zone is required: a time without one does not say when the download happened.

/// `Ok` if `text` is an RFC 3339 date-time, else why not.
pub(super) fn check_rfc3339(text: &str) -> Result<(), String> {
    let shape = "must be an RFC 3339 time such as 2024-05-01T12:00:00Z";
    let bytes = text.as_bytes();
    // "YYYY-MM-DDThh:mm:ss" is 19 bytes; the rest is the fraction and the zone.
    if bytes.len() < 19 || !text.is_ascii() {
        return Err(shape.to_owned());
    }
    let (date_time, rest) = bytes.split_at(19);
    let separators_ok = date_time[4] == b'-'
        && date_time[7] == b'-'
        && matches!(date_time[10], b'T' | b't')
        && date_time[13] == b':'
        && date_time[16] == b':';
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        digits(&date_time[0..4]),
        digits(&date_time[5..7]),
        digits(&date_time[8..10]),
        digits(&date_time[11..13]),
        digits(&date_time[14..16]),
        digits(&date_time[17..19]),
    ) else {
        return Err(shape.to_owned());
    };
    if !separators_ok {
        return Err(shape.to_owned());
    }
    if !(1..=12).contains(&month) {
        return Err(format!("has month {month:02}, which does not exist"));
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(format!(
            "has day {day:02}, which month {month:02} of {year:04} does not have"
        ));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(format!(
            "has time {hour:02}:{minute:02}:{second:02}, which does not exist"
        ));
    }
    let zone = match rest.strip_prefix(b".") {
        Some(fraction_and_zone) => {
            let fraction_len = fraction_and_zone
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if !(1..=9).contains(&fraction_len) {
                return Err("must have 1 to 9 digits of fractional seconds after \".\"".to_owned());
            }
            &fraction_and_zone[fraction_len..]
        }
        None => rest,
    };
    check_zone(zone)
}

fn check_zone(zone: &[u8]) -> Result<(), String> {
    match zone {
        [b'Z' | b'z'] => Ok(()),
        [b'+' | b'-', hours @ .., b':', m1, m2] if hours.len() == 2 => {
            match (digits(hours), digits(&[*m1, *m2])) {
                (Some(hours), Some(minutes)) if hours <= 23 && minutes <= 59 => Ok(()),
                _ => Err("has a time zone offset that does not exist".to_owned()),
            }
        }
        [] => Err("must end with a time zone: Z or +hh:mm".to_owned()),
        _ => Err("must end with a time zone: Z or +hh:mm, and nothing after it".to_owned()),
    }
}

/// The value of a run of ASCII digits, or `None` if any byte is not one.
fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |value, &b| {
        b.is_ascii_digit().then(|| value * 10 + u32::from(b - b'0'))
    })
}

#[allow(
    clippy::manual_is_multiple_of,
    reason = "u32::is_multiple_of needs Rust 1.87; the workspace's rust-version is 1.85"
)]
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_times() {
        for text in [
            "2024-05-01T12:00:00Z",
            "2024-05-01t12:00:00z",
            "2024-02-29T00:00:00+00:00",
            "2000-02-29T23:59:59-08:00",
            "2016-12-31T23:59:60Z",
            "2024-05-01T12:00:00.1Z",
            "2024-05-01T12:00:00.123456789+05:30",
            "0001-01-01T00:00:00Z",
        ] {
            assert_eq!(check_rfc3339(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn invalid_times() {
        let shape = "must be an RFC 3339 time such as 2024-05-01T12:00:00Z";
        for (text, message) in [
            ("", shape),
            ("2024-05-01", shape),
            ("2024-05-01 12:00:00Z", shape),
            ("2024/05/01T12:00:00Z", shape),
            ("2024-5-01T12:00:00Z", shape),
            ("２０２４-05-01T12:00:00Z", shape),
            ("2024-13-01T12:00:00Z", "has month 13, which does not exist"),
            (
                "2023-02-29T12:00:00Z",
                "has day 29, which month 02 of 2023 does not have",
            ),
            (
                "1900-02-29T12:00:00Z",
                "has day 29, which month 02 of 1900 does not have",
            ),
            (
                "2024-04-31T12:00:00Z",
                "has day 31, which month 04 of 2024 does not have",
            ),
            (
                "2024-04-00T12:00:00Z",
                "has day 00, which month 04 of 2024 does not have",
            ),
            (
                "2024-04-01T24:00:00Z",
                "has time 24:00:00, which does not exist",
            ),
            (
                "2024-04-01T12:60:00Z",
                "has time 12:60:00, which does not exist",
            ),
            (
                "2024-04-01T12:00:61Z",
                "has time 12:00:61, which does not exist",
            ),
            (
                "2024-05-01T12:00:00",
                "must end with a time zone: Z or +hh:mm",
            ),
            (
                "2024-05-01T12:00:00.Z",
                "must have 1 to 9 digits of fractional seconds after \".\"",
            ),
            (
                "2024-05-01T12:00:00.1234567890Z",
                "must have 1 to 9 digits of fractional seconds after \".\"",
            ),
            (
                "2024-05-01T12:00:00+0100",
                "must end with a time zone: Z or +hh:mm, and nothing after it",
            ),
            (
                "2024-05-01T12:00:00+24:00",
                "has a time zone offset that does not exist",
            ),
            (
                "2024-05-01T12:00:00ZZ",
                "must end with a time zone: Z or +hh:mm, and nothing after it",
            ),
        ] {
            assert_eq!(check_rfc3339(text), Err(message.to_owned()), "{text}");
        }
    }
}
