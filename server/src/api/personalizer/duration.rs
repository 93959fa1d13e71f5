//! ISO-8601 durations as Personalizer writes them (`PT10M`, `P1DT2H`, `PT0.5S`), plus the .NET
//! time-span form (`00:10:00`, `1.02:00:00`) some clients send.

/// Seconds in a duration string, or `None` when it is not one.
pub fn parse(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('P').or_else(|| s.strip_prefix('p')) {
        return iso(rest);
    }
    timespan(s)
}

fn iso(rest: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut in_time = false;
    let mut num = String::new();
    let mut any = false;
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && num.is_empty() => in_time = true,
            d if d.is_ascii_digit() || d == '.' || d == ',' => {
                num.push(if d == ',' { '.' } else { d })
            }
            unit => {
                let v: f64 = num.parse().ok()?;
                num.clear();
                let secs = match (in_time, unit) {
                    (false, 'Y') => 365.0 * 86_400.0,
                    (false, 'M') => 30.0 * 86_400.0,
                    (false, 'W') => 7.0 * 86_400.0,
                    (false, 'D') => 86_400.0,
                    (true, 'H') => 3_600.0,
                    (true, 'M') => 60.0,
                    (true, 'S') => 1.0,
                    _ => return None,
                };
                total += v * secs;
                any = true;
            }
        }
    }
    (num.is_empty() && any && total.is_finite()).then_some(total)
}

fn timespan(s: &str) -> Option<f64> {
    let (days, clock) = match s.split_once('.') {
        Some((d, rest)) if rest.contains(':') && !d.contains(':') => (d.parse::<f64>().ok()?, rest),
        _ => (0.0, s),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    if parts.len() != 3 {
        return None;
    }
    let h: f64 = parts[0].parse().ok()?;
    let m: f64 = parts[1].parse().ok()?;
    let sec: f64 = parts[2].parse().ok()?;
    Some(days * 86_400.0 + h * 3_600.0 + m * 60.0 + sec)
}

/// The canonical ISO-8601 form of a number of seconds (`PT10M`, `P1DT1H`, `PT0.5S`).
pub fn format(seconds: f64) -> String {
    let millis = (seconds * 1000.0).round() as u64;
    let (days, rem) = (millis / 86_400_000, millis % 86_400_000);
    let (h, rem) = (rem / 3_600_000, rem % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    if h > 0 || m > 0 || rem > 0 || days == 0 {
        out.push('T');
        if h > 0 {
            out.push_str(&format!("{h}H"));
        }
        if m > 0 {
            out.push_str(&format!("{m}M"));
        }
        if rem > 0 || (h == 0 && m == 0) {
            if rem % 1000 == 0 {
                out.push_str(&format!("{}S", rem / 1000));
            } else {
                out.push_str(&format!("{}S", rem as f64 / 1000.0));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse("PT10M"), Some(600.0));
        assert_eq!(parse("P1DT2H"), Some(93_600.0));
        assert_eq!(parse("PT0.5S"), Some(0.5));
        assert_eq!(parse("00:10:00"), Some(600.0));
        assert_eq!(parse("1.00:00:05"), Some(86_405.0));
        assert_eq!(parse("PT"), None);
        assert_eq!(parse("10 minutes"), None);
        assert_eq!(parse("P1H"), None);
        assert_eq!(format(600.0), "PT10M");
        assert_eq!(format(93_600.0), "P1DT2H");
        assert_eq!(format(5.0), "PT5S");
        assert_eq!(format(86_400.0), "P1D");
        assert_eq!(format(0.25), "PT0.25S");
        for s in [1.0, 61.0, 3_601.0, 86_461.0, 172_800.0] {
            assert_eq!(parse(&format(s)), Some(s));
        }
    }
}
