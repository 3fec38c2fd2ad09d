//! Parsers for flag values, with the syntax Go's `flag`/`strconv`/`time`
//! packages accept, so that every command line the Go sidecar takes is taken
//! here with the same meaning.

use std::collections::BTreeMap;
use std::time::Duration;

/// A Go `time.Duration`: signed nanoseconds. Kept signed because Go accepts
/// `-1s` on the command line; validation decides which signs a flag allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(pub i64);

impl GoDuration {
    /// The duration as a `std` duration, if it is not negative.
    pub fn to_std(self) -> Option<Duration> {
        u64::try_from(self.0).ok().map(Duration::from_nanos)
    }

    /// True when strictly greater than zero.
    pub fn is_positive(self) -> bool {
        self.0 > 0
    }
}

impl std::fmt::Display for GoDuration {
    /// Go's `Duration.String()` shape for the values flags use (`1m0s`, `300ms`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let neg = self.0 < 0;
        let n = self.0.unsigned_abs();
        let sign = if neg { "-" } else { "" };
        if n == 0 {
            return f.write_str("0s");
        }
        if n < 1_000_000_000 {
            let (div, unit) = if n < 1_000 {
                (1, "ns")
            } else if n < 1_000_000 {
                (1_000, "µs")
            } else {
                (1_000_000, "ms")
            };
            return write!(f, "{sign}{}{unit}", trim_fraction(n, div));
        }
        let h = n / 3_600_000_000_000;
        let m = (n / 60_000_000_000) % 60;
        let s = n % 60_000_000_000;
        f.write_str(sign)?;
        if h > 0 {
            write!(f, "{h}h{m}m")?;
        } else if m > 0 {
            write!(f, "{m}m")?;
        }
        write!(f, "{}s", trim_fraction(s, 1_000_000_000))
    }
}

/// `n / div` as a decimal without trailing zeros in the fraction.
fn trim_fraction(n: u64, div: u64) -> String {
    let whole = n / div;
    let frac = n % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Nanoseconds per unit, for the units `time.ParseDuration` knows.
fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        // Go accepts the ASCII spelling, MICRO SIGN and GREEK SMALL LETTER MU.
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Parses a duration exactly as Go's `time.ParseDuration` does: an optional
/// sign, then one or more `<decimal><unit>` terms (`1h30m`, `1.5h`, `300ms`);
/// a bare `0` is the only unitless value.
pub fn parse_go_duration(text: &str) -> Result<GoDuration, String> {
    let invalid = || format!("time: invalid duration \"{text}\"");
    let (neg, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(GoDuration(0));
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    // Sum in u128 so that overflow of the i64 range is detected, not wrapped.
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration \"{text}\""));
        }
        let per = unit_nanos(unit)
            .ok_or_else(|| format!("time: unknown unit \"{unit}\" in duration \"{text}\""))?;
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut term = whole.checked_mul(u128::from(per)).ok_or_else(invalid)?;
        term += fraction_nanos(frac_part, per);
        total = total.checked_add(term).ok_or_else(invalid)?;
        if total > 1u128 << 63 {
            return Err(invalid());
        }
        rest = after;
    }
    if neg {
        Ok(GoDuration((total as i128).wrapping_neg() as i64))
    } else {
        i64::try_from(total).map(GoDuration).map_err(|_| invalid())
    }
}

/// The nanoseconds of a fractional part (the digits after `.`) of `per`-ns
/// units. Go keeps the digits as an integer over a power of ten, ignores
/// digits that would overflow it, and scales in floating point; doing the
/// same gives the same rounding (`0.3333333333333333333h` is exactly 20m).
fn fraction_nanos(digits: &str, per: u64) -> u128 {
    let mut f: u64 = 0;
    let mut scale: f64 = 1.0;
    for d in digits.bytes() {
        if f > (i64::MAX as u64) / 10 {
            break;
        }
        let next = f * 10 + u64::from(d - b'0');
        if next > 1 << 63 {
            break;
        }
        f = next;
        scale *= 10.0;
    }
    if f == 0 {
        return 0;
    }
    // The float-to-int cast saturates; the caller's range check rejects it.
    (f as f64 * (per as f64 / scale)) as u128
}

/// Parses a boolean as Go's `strconv.ParseBool`.
pub fn parse_go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("parse error: invalid boolean \"{text}\"")),
    }
}

/// Parses an integer as Go's `strconv.ParseInt(s, 0, 64)`: optional sign,
/// `0x`/`0o`/`0b`/leading-`0` base prefixes, `_` separators only after a prefix.
pub fn parse_go_int(text: &str) -> Result<i64, String> {
    let invalid = || format!("parse error: invalid integer \"{text}\"");
    let (neg, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = parse_go_uint_body(body).ok_or_else(invalid)?;
    let value = if neg {
        -(i128::from(magnitude))
    } else {
        i128::from(magnitude)
    };
    i64::try_from(value).map_err(|_| format!("parse error: value out of range \"{text}\""))
}

/// Parses an unsigned integer as Go's `strconv.ParseUint(s, 0, 32)`.
pub fn parse_go_u32(text: &str) -> Result<u32, String> {
    let v = parse_go_uint_body(text)
        .ok_or_else(|| format!("parse error: invalid unsigned integer \"{text}\""))?;
    u32::try_from(v).map_err(|_| format!("parse error: value out of range \"{text}\""))
}

/// Digits of a Go integer literal with an optional base prefix (no sign).
fn parse_go_uint_body(body: &str) -> Option<u64> {
    let lower = body.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d, true)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d, true)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d, true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..], true)
    } else {
        (10, lower.as_str(), false)
    };
    if digits.contains('_') {
        // Go allows underscores only between digits of a prefixed literal.
        // A leading '_' is allowed: it separates the prefix from a digit.
        if !prefixed || digits.ends_with('_') || digits.contains("__") {
            return None;
        }
    }
    let cleaned: String = digits.chars().filter(|c| *c != '_').collect();
    if cleaned.is_empty() || !cleaned.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(&cleaned, radix).ok()
}

/// Parses a float as Go's `strconv.ParseFloat(s, 64)` for the forms a QPS
/// value takes (decimal, exponent, `Inf`, `NaN`).
pub fn parse_go_float(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .map_err(|_| format!("parse error: invalid float \"{text}\""))
}

/// One `--feature-gates` value: `Name=bool` pairs separated by commas. Empty
/// items are skipped; a pair without `=` or with a non-boolean value is a
/// flag parse error, as in Go's `MapStringBool`.
pub fn parse_feature_gate_list(text: &str) -> Result<Vec<(String, bool)>, String> {
    let mut out = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((name, value)) = item.split_once('=') else {
            return Err(format!("missing bool value for {item}"));
        };
        let value = value.trim();
        let enabled = parse_go_bool(value)
            .map_err(|_| format!("invalid value of {}={value}", name.trim()))?;
        out.push((name.trim().to_string(), enabled));
    }
    Ok(out)
}

/// One `--leader-election-labels` value: `key:value` items separated by
/// commas. An item that does not split into exactly two parts on `:` is a
/// flag parse error.
pub fn parse_label_list(text: &str) -> Result<Vec<(String, String)>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|item| {
            let parts: Vec<&str> = item.split(':').collect();
            match parts.as_slice() {
                [k, v] if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(format!(
                    "invalid label \"{item}\": expected key:value (exactly one ':')"
                )),
            }
        })
        .collect()
}

/// Merges repeated `--leader-election-labels` values; later keys win.
pub fn merge_labels(lists: &[Vec<(String, String)>]) -> BTreeMap<String, String> {
    lists.iter().flatten().cloned().collect()
}

/// A Kubernetes resource quantity (`0`, `64Ki`, `1M`, `1.5Gi`, `1e3`), as the
/// logging buffer-size flags take. Only the syntax and "is it zero" matter
/// here, because any non-zero value is rejected by validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quantity {
    /// The text as given.
    pub text: String,
    /// True when the numeric part is zero.
    pub is_zero: bool,
}

/// Parses a resource quantity: sign, decimal number, then an optional binary
/// suffix (`Ki`…`Ei`), decimal suffix (`n u m k M G T P E`) or exponent.
pub fn parse_quantity(text: &str) -> Result<Quantity, String> {
    let invalid = || {
        format!(
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': \"{text}\""
        )
    };
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    let num_len = body
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, suffix) = body.split_at(num_len);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(invalid());
    }
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|e| {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        })
        .unwrap_or(false);
    if !suffix_ok {
        return Err(invalid());
    }
    let is_zero = number.bytes().all(|b| b == b'0' || b == b'.');
    Ok(Quantity {
        text: text.to_string(),
        is_zero,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: i64 = 1;
    const US: i64 = 1_000;
    const MS: i64 = 1_000_000;
    const S: i64 = 1_000_000_000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;

    #[test]
    fn go_durations_parse_like_time_parse_duration() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("-0", 0),
            ("+0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("-5s", -5 * S),
            ("+5s", 5 * S),
            ("-0s", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600 * MS),
            ("5.s", 5 * S),
            (".5s", 500 * MS),
            ("1.004s", S + 4 * MS),
            ("100.00100s", 100 * S + MS),
            ("10ns", 10 * NS),
            ("11us", 11 * US),
            ("12µs", 12 * US),
            ("12μs", 12 * US),
            ("13ms", 13 * MS),
            ("14s", 14 * S),
            ("15m", 15 * M),
            ("16h", 16 * H),
            ("3h30m", 3 * H + 30 * M),
            ("10.5s4m", 4 * M + 10 * S + 500 * MS),
            ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
            (
                "1h2m3s4ms5us6ns",
                H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS,
            ),
            ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
            ("52763797000ns", 52763797000 * NS),
            ("0.3333333333333333333h", 20 * M),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("1.5h", H + 30 * M),
            ("300ms", 300 * MS),
            ("1m30s", 90 * S),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_duration(text), Ok(GoDuration(*want)), "{text}");
        }
    }

    #[test]
    fn malformed_go_durations_are_rejected() {
        for text in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "10",
            "1.5",
            "x1s",
            "1s ",
            " 1s",
            "9223372036854775808ns",
            "-9223372036854775809ns",
            "3000000h",
        ] {
            assert!(parse_go_duration(text).is_err(), "{text:?} should fail");
        }
    }

    #[test]
    fn durations_display_like_go() {
        let cases: &[(i64, &str)] = &[
            (0, "0s"),
            (15 * M, "15m0s"),
            (M, "1m0s"),
            (5 * S, "5s"),
            (300 * MS, "300ms"),
            (H + 30 * M, "1h30m0s"),
            (1500 * MS, "1.5s"),
            (-S, "-1s"),
            (2 * US, "2µs"),
        ];
        for (n, want) in cases {
            assert_eq!(GoDuration(*n).to_string(), *want);
        }
    }

    #[test]
    fn go_bools() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Ok(true));
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Ok(false));
        }
        for bad in ["", "yes", "tRUE", "2", "on"] {
            assert!(parse_go_bool(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn go_ints_accept_base_prefixes() {
        assert_eq!(parse_go_int("10"), Ok(10));
        assert_eq!(parse_go_int("-1"), Ok(-1));
        assert_eq!(parse_go_int("+7"), Ok(7));
        assert_eq!(parse_go_int("0x10"), Ok(16));
        assert_eq!(parse_go_int("0o17"), Ok(15));
        assert_eq!(parse_go_int("017"), Ok(15));
        assert_eq!(parse_go_int("0b101"), Ok(5));
        assert_eq!(parse_go_int("0x_1_0"), Ok(16));
        assert_eq!(parse_go_int("0"), Ok(0));
        for bad in [
            "",
            "1_0",
            "ten",
            "08",
            "0x",
            "1.5",
            "--1",
            "99999999999999999999",
        ] {
            assert!(parse_go_int(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_go_u32("5"), Ok(5));
        assert!(parse_go_u32("-1").is_err());
        assert!(parse_go_u32("4294967296").is_err());
    }

    #[test]
    fn feature_gate_lists() {
        assert_eq!(
            parse_feature_gate_list("A=true, B=false,,C=1"),
            Ok(vec![
                ("A".to_string(), true),
                ("B".to_string(), false),
                ("C".to_string(), true)
            ])
        );
        assert!(parse_feature_gate_list("A").is_err());
        assert!(parse_feature_gate_list("A=maybe").is_err());
        assert_eq!(parse_feature_gate_list(""), Ok(vec![]));
    }

    #[test]
    fn label_lists() {
        assert_eq!(
            parse_label_list("a:b,c:"),
            Ok(vec![
                ("a".to_string(), "b".to_string()),
                ("c".to_string(), String::new())
            ])
        );
        assert!(parse_label_list("a").is_err());
        assert!(parse_label_list("a:b:c").is_err());
        assert!(parse_label_list("a:b,").is_err());
        assert!(parse_label_list(":b").is_err());
        assert_eq!(parse_label_list(""), Ok(vec![]));
        let merged = merge_labels(&[
            parse_label_list("a:1,b:2").unwrap(),
            parse_label_list("a:3").unwrap(),
        ]);
        assert_eq!(merged.get("a").map(String::as_str), Some("3"));
        assert_eq!(merged.len(), 2);
    }

    #[test]
    fn quantities() {
        for (text, zero) in [
            ("0", true),
            ("0Mi", true),
            ("0.0", true),
            ("64Ki", false),
            ("1M", false),
            ("1.5Gi", false),
            ("1e3", false),
            ("-1", false),
        ] {
            assert_eq!(parse_quantity(text).map(|q| q.is_zero), Ok(zero), "{text}");
        }
        for bad in ["", "Mi", "1X", "1..2", "abc", "1e"] {
            assert!(parse_quantity(bad).is_err(), "{bad}");
        }
    }
}
