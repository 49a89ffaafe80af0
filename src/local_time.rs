//! Times as the administrator reads them: local time with its offset. Records
//! keep Unix seconds; `show` prints them as TOML datetimes (readable, and still
//! parsed by any TOML reader) with the seconds beside them.

use chrono::{DateTime, Local};

/// `2026-12-02 06:40:12 +01:00`; the raw number when it is out of range.
pub fn local(unix: u64) -> String {
    match to_local(unix) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S %:z").to_string(),
        None => unix.to_string(),
    }
}

fn to_local(unix: u64) -> Option<DateTime<Local>> {
    let seconds = i64::try_from(unix).ok()?;
    DateTime::from_timestamp(seconds, 0).map(|t| t.with_timezone(&Local))
}

/// The keys of envelopes and archive records that hold Unix seconds.
const TIME_KEYS: &[&str] = &["arrived", "next_attempt", "time"];

/// TOML as `toml::to_string` writes it, with every time key's value written as a
/// local datetime and the Unix seconds in a comment:
/// `arrived = 2026-12-02T06:40:12+01:00 # 1796190012`. `next_attempt = 0` (due
/// now) stays 0.
pub fn with_local_times(toml: &str) -> String {
    let mut out = String::with_capacity(toml.len() + 64);
    for line in toml.lines() {
        out.push_str(&local_time_line(line).unwrap_or_else(|| line.to_string()));
        out.push('\n');
    }
    out
}

fn local_time_line(line: &str) -> Option<String> {
    let (key, value) = line.split_once(" = ")?;
    if !TIME_KEYS.contains(&key.trim()) {
        return None;
    }
    let unix: u64 = value.trim().parse().ok()?;
    if unix == 0 {
        return Some(format!("{key} = 0 # now"));
    }
    let time = to_local(unix)?;
    Some(format!(
        "{key} = {} # {unix}",
        time.format("%Y-%m-%dT%H:%M:%S%:z")
    ))
}

/// `--since` and the search's "since": a duration ago ("2h") or a date
/// ("2026-11-22", from local midnight), as unix seconds.
pub fn parse_since(text: &str) -> Option<u64> {
    parse_point(text, false)
}

/// `--until` and the search's "until": a duration ago ("2h") or a date
/// ("2026-11-22", that whole day: up to the next local midnight).
pub fn parse_until(text: &str) -> Option<u64> {
    parse_point(text, true)
}

fn parse_point(text: &str, end_of_day: bool) -> Option<u64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Ok(ago) = humantime::parse_duration(text.trim()) {
        return Some(now.saturating_sub(ago.as_secs()));
    }
    let mut day = chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()?;
    if end_of_day {
        day = day.succ_opt()?;
    }
    // The pages and `list` show local times, so a date is a local day.
    let midnight = day
        .and_hms_opt(0, 0, 0)?
        .and_local_timezone(Local)
        .earliest()?;
    u64::try_from(midnight.timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_become_local_datetimes_that_toml_still_reads() {
        let text = "id = \"A\"\narrived = 1796190012\nnext_attempt = 0\nsize = 1796190012\n\n[released]\ntime = 1796190100\n";
        let shown = with_local_times(text);
        assert!(shown.contains("size = 1796190012\n"), "{shown}");
        assert!(shown.contains("next_attempt = 0 # now"), "{shown}");
        assert!(shown.contains("# 1796190012\n"), "{shown}");
        let parsed: toml::Table = toml::from_str(&shown).unwrap();
        let arrived = parsed["arrived"].as_datetime().unwrap().to_string();
        let expected = to_local(1796190012).unwrap();
        assert_eq!(
            chrono::DateTime::parse_from_rfc3339(&arrived).unwrap(),
            expected
        );
        assert!(parsed["released"]["time"].as_datetime().is_some());
    }
}
