//! Parsing times and durations given on the command line.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Parses `500ms`, `30s`, `5m`, `2h` or `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad_duration(text))?;
    let millis = match unit {
        "ms" => 1,
        "s" | "" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad_duration(text)),
    };
    number
        .checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(|| bad_duration(text))
}

fn bad_duration(text: &str) -> String {
    format!("{text:?} is not a duration; use a number with ms, s, m, h or d, like 30s or 5m")
}

/// Parses `--at`: an RFC 3339 time (`2026-11-26T10:00:00Z`), `now`, or `+` and a
/// duration (`+30s`) meaning that long from now.
pub fn parse_at(text: &str) -> Result<Option<DateTime<Utc>>, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(None);
    }
    if let Some(delay) = text.strip_prefix('+') {
        let delay = parse_duration(delay).map_err(|_| bad_at(text))?;
        let delay = chrono::Duration::from_std(delay).map_err(|_| bad_at(text))?;
        return Utc::now()
            .checked_add_signed(delay)
            .map(Some)
            .ok_or_else(|| bad_at(text));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| bad_at(text))
}

fn bad_at(text: &str) -> String {
    format!(
        "{text:?} is not a time; use RFC 3339 (2026-11-26T10:00:00Z), `now`, or a delay like +30s or +2h"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn at_times() {
        assert_eq!(parse_at("now").unwrap(), None);
        assert!(parse_at("2026-11-26T10:00:00Z").unwrap().is_some());
        assert!(parse_at("+5m").unwrap().unwrap() > Utc::now());
        assert!(parse_at("tomorrow").unwrap_err().contains("RFC 3339"));
    }
}
