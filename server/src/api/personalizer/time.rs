//! UTC instants as ISO-8601 text (`2026-11-29T02:30:00.000Z`) for Personalizer's date fields.

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Parse `YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|±HH:MM]` into milliseconds since the epoch.
pub fn parse_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (date, rest) = s.split_at(s.find(['T', 't', ' ']).unwrap_or(s.len()));
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let mo: i64 = dp.next()?.parse().ok()?;
    let d: i64 = dp.next()?.parse().ok()?;
    if dp.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ms = days_from_civil(y, mo, d) * 86_400_000;
    let rest = rest.get(1..).unwrap_or("");
    if !rest.is_empty() {
        let (clock, offset) = match rest.find(['Z', 'z', '+', '-']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let mut cp = clock.split(':');
        let h: i64 = cp.next()?.parse().ok()?;
        let mi: i64 = cp.next()?.parse().ok()?;
        let sec: f64 = cp.next().map(str::parse).transpose().ok()?.unwrap_or(0.0);
        ms += h * 3_600_000 + mi * 60_000 + (sec * 1000.0).round() as i64;
        if let Some(sign) = offset.chars().next().filter(|c| *c == '+' || *c == '-') {
            let (oh, om) = offset[1..].split_once(':').unwrap_or((&offset[1..], "0"));
            let off = oh.parse::<i64>().ok()? * 3_600_000 + om.parse::<i64>().ok()? * 60_000;
            ms += if sign == '+' { -off } else { off };
        }
    }
    u64::try_from(ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        let t = 1_796_000_123_456;
        assert_eq!(parse_ms(&format_ms(t)), Some(t));
        assert_eq!(
            parse_ms("2024-02-29T12:00:00+01:00"),
            parse_ms("2024-02-29T11:00:00Z")
        );
        assert_eq!(parse_ms("2024-03-01"), parse_ms("2024-03-01T00:00:00Z"));
        assert_eq!(parse_ms("yesterday"), None);
    }
}
