//! Durations (`90s`, `10m`, `1h30m`) and sizes (`1 MiB`, `512KiB`) as written in settings.

use std::time::Duration;

/// Parses `90s`, `10m`, `1h30m`, `500ms`, or a bare number of seconds. At most a year: longer
/// is a typo, and time arithmetic on it could overflow.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = parse_any_duration(text)?;
    if d > MAX_DURATION {
        return Err(format!("\"{text}\" is too long (at most a year)"));
    }
    Ok(d)
}

/// The longest duration a setting may have.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86400);

fn parse_any_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("\"{text}\" is not a duration like 30s, 10m or 1h"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("\"{text}\": number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Some(Duration::from_millis(n)),
            "s" | "sec" => Some(Duration::from_secs(n)),
            "m" | "min" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(3600).map(Duration::from_secs),
            "d" => n.checked_mul(86400).map(Duration::from_secs),
            _ => return Err(format!("\"{text}\": unknown unit \"{unit}\" (ms, s, m, h, d)")),
        };
        total = d.and_then(|d| total.checked_add(d)).ok_or_else(|| format!("\"{text}\" is too long"))?;
    }
    Ok(total)
}

/// Parses `1 MiB`, `512KiB`, `2MB`, `100k`, or a bare number of bytes (the units of
/// `bytesize`: K, M, G are powers of 1000, Ki, Mi, Gi of 1024, any case, `B` optional).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if !s.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("\"{text}\" is not a size like 1 MiB or 512 KiB"));
    }
    let size: bytesize::ByteSize = s
        .parse()
        .map_err(|_| format!("\"{text}\": not a size (a number and B, KiB, MiB, GiB, KB, MB or GB)"))?;
    // Sizes are parsed through floating point: what does not fit is refused, not rounded.
    match size.as_u64() {
        u64::MAX => Err(format!("\"{text}\" is too large")),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, want) in [("90", 90), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("1d", 86400)] {
            assert_eq!(parse_duration(text).unwrap(), Duration::from_secs(want), "{text}");
        }
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in
            ["", "m", "10 parsecs", "-1s", "1.5h", "18446744073709551615h", "18446744073709551615s1s", "367d"]
        {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        for (text, want) in
            [("1 MiB", 1 << 20), ("512KiB", 512 << 10), ("2MB", 2_000_000), ("100", 100), ("1 gib", 1 << 30)]
        {
            assert_eq!(parse_size(text).unwrap(), want, "{text}");
        }
        for bad in ["", "MiB", "1 parsec", "99999999999999999999 GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
