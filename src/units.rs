//! Parsing of the human units option values use: durations (`90s`, `30m`, `2h`, `1h30m`,
//! `250ms`) and byte sizes in Kubernetes quantity form (`512Mi`, `2Gi`, `1G`, `1048576`).
//! The error strings are shown to the user as-is by the CLI, so each one says what was
//! expected and gives an example.

use std::time::Duration;

const DURATION_HELP: &str =
    "expected a duration such as 90s, 30m, 2h or 1h30m (units: ms, s, m, h, d; at most 3650d)";
/// Longer durations are refused: nothing on the platform waits ten years, and deadlines
/// computed from them must not overflow.
const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);
const SIZE_HELP: &str = "expected a size such as 512Mi, 2Gi or 1G (units: Ki, Mi, Gi, Ti, k, M, G, T; no unit means bytes)";

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty value: {DURATION_HELP}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("`{text}` is not a duration: {DURATION_HELP}"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is too large: {DURATION_HELP}"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "d" => Duration::from_secs(number.saturating_mul(86_400)),
            "" => return Err(format!("`{text}` has no unit: {DURATION_HELP}")),
            other => {
                return Err(format!(
                    "`{text}` has an unknown unit `{other}`: {DURATION_HELP}"
                ));
            }
        };
        total = total
            .checked_add(part)
            .filter(|t| *t <= MAX_DURATION)
            .ok_or_else(|| format!("`{text}` is too large: {DURATION_HELP}"))?;
    }
    Ok(total)
}

pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!("`{text}` is not a size: {SIZE_HELP}"));
    }
    let number: u64 = text[..digits]
        .parse()
        .map_err(|_| format!("`{text}` is too large: {SIZE_HELP}"))?;
    let multiplier: u64 = match &text[digits..] {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "`{text}` has an unknown unit `{other}`: {SIZE_HELP}"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is too large: {SIZE_HELP}"))
}

/// Formats a byte count for people: `12.3 MiB`.
/// Parses a Kubernetes CPU quantity (`250m`, `1`, `0.5`, `2.25`) into millicores.
pub fn parse_cpu(text: &str) -> Result<u64, String> {
    let bad =
        || format!("`{text}` is not a CPU quantity; write it as Kubernetes does: 250m, 1, 0.5");
    if let Some(millis) = text.strip_suffix('m') {
        return millis.parse::<u64>().map_err(|_| bad());
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let fraction: u64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<3}").parse().map_err(|_| bad())?
    };
    whole
        .checked_mul(1000)
        .and_then(|m| m.checked_add(fraction))
        .ok_or_else(bad)
}

pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_in_millicores() {
        assert_eq!(parse_cpu("250m"), Ok(250));
        assert_eq!(parse_cpu("1"), Ok(1000));
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu("2.25"), Ok(2250));
        for bad in ["", "one", "1.2345", "-1", "1.x", "m"] {
            assert!(parse_cpu(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_in_every_unit_and_compound() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        for bad in ["", "90", "s", "ten minutes", "5y", "-3s", "1.5h"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(
                err.contains("expected a duration such as 90s"),
                "{bad}: {err}"
            );
        }
        assert!(
            parse_duration("99999999999999999999s")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn sizes_binary_decimal_and_plain() {
        assert_eq!(parse_size("512Mi"), Ok(512 << 20));
        assert_eq!(parse_size("2Gi"), Ok(2 << 30));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("64Ki"), Ok(65_536));
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
    }

    #[test]
    fn bad_sizes_say_what_is_expected() {
        for bad in ["", "Mi", "2GB", "1.5Gi", "-1Mi", "lots"] {
            let err = parse_size(bad).unwrap_err();
            assert!(
                err.contains("expected a size such as 512Mi"),
                "{bad}: {err}"
            );
        }
        assert!(
            parse_size("99999999999Ti")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn bytes_are_formatted_for_people() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(300 << 20), "300.0 MiB");
    }
}
