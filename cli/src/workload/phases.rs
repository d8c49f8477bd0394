//! Load phases (`ramp:10s:2,peak:30s:8`) and durations (`500ms`, `20s`, `2m`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use strata::{Error, Result};

/// One phase of a load run: `threads` workers for `duration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// The phase's name, as given (letters, digits, `-` and `_`).
    pub name: String,
    /// How long the phase runs; serialized as `duration_ms`.
    #[serde(rename = "duration_ms", with = "millis")]
    pub duration: Duration,
    /// Worker threads during the phase.
    pub threads: usize,
}

/// The most worker threads a phase may ask for.
pub const MAX_THREADS: usize = 1024;

/// Parses a duration: a whole number followed by `ms`, `s`, `m` or `h` (`500ms`, `20s`, `2m`).
pub fn parse_duration(text: &str) -> Result<Duration> {
    let invalid = |reason: &str| Error::InvalidValue {
        field: "duration",
        value: text.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    if digits.is_empty() {
        return Err(invalid(
            "expected a whole number and a unit, as in 500ms, 20s, 2m",
        ));
    }
    let value: u64 = digits
        .parse()
        .map_err(|_| invalid("the number is too large"))?;
    let millis = match unit {
        "ms" => Some(value),
        "s" => value.checked_mul(1000),
        "m" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        "" => return Err(invalid("needs a unit: ms, s, m or h (as in 20s)")),
        _ => return Err(invalid("unknown unit; use ms, s, m or h (as in 20s)")),
    }
    .ok_or_else(|| invalid("the duration is too long"))?;
    if millis == 0 {
        return Err(invalid("must be longer than 0"));
    }
    Ok(Duration::from_millis(millis))
}

/// Parses a comma-separated list of phases, each `name:duration:threads`
/// (`ramp:10s:2,peak:30s:8`).
pub fn parse_phases(text: &str) -> Result<Vec<Phase>> {
    let invalid = |part: &str, reason: String| Error::InvalidValue {
        field: "phase",
        value: part.to_owned(),
        reason,
    };
    let mut phases = Vec::new();
    for part in text.split(',').map(str::trim) {
        let fields: Vec<&str> = part.split(':').collect();
        let [name, duration, threads] = fields.as_slice() else {
            return Err(invalid(
                part,
                "expected name:duration:threads, as in ramp:10s:2".into(),
            ));
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                part,
                "the name must be letters, digits, '-' or '_'".into(),
            ));
        }
        if phases.iter().any(|p: &Phase| p.name == *name) {
            return Err(invalid(part, format!("phase `{name}` is named twice")));
        }
        let duration = parse_duration(duration).map_err(|e| match e {
            Error::InvalidValue { value, reason, .. } => {
                invalid(part, format!("duration `{value}`: {reason}"))
            }
            other => other,
        })?;
        let threads = parse_threads(threads).map_err(|reason| invalid(part, reason))?;
        phases.push(Phase {
            name: (*name).to_owned(),
            duration,
            threads,
        });
    }
    Ok(phases)
}

/// Parses a thread count for the command line: 1 to [`MAX_THREADS`].
pub fn parse_thread_count(text: &str) -> Result<usize> {
    parse_threads(text).map_err(|reason| Error::InvalidValue {
        field: "threads",
        value: text.to_owned(),
        reason,
    })
}

fn parse_threads(text: &str) -> std::result::Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        Ok(_) => Err(format!("threads must be 1 to {MAX_THREADS}")),
        Err(_) => Err(format!("threads `{text}` is not a whole number")),
    }
}

/// Serializes a `Duration` as whole milliseconds.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes whole milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Reads whole milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() -> Result<()> {
        assert_eq!(parse_duration("500ms")?, Duration::from_millis(500));
        assert_eq!(parse_duration("20s")?, Duration::from_secs(20));
        assert_eq!(parse_duration("2m")?, Duration::from_secs(120));
        assert_eq!(parse_duration("1h")?, Duration::from_secs(3600));
        for bad in [
            "",
            "s",
            "10",
            "10x",
            "1.5s",
            "-1s",
            "0s",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
        Ok(())
    }

    #[test]
    fn phases_parse() -> Result<()> {
        let phases = parse_phases("ramp:10s:2,peak:30s:8")?;
        assert_eq!(
            phases,
            [
                Phase {
                    name: "ramp".into(),
                    duration: Duration::from_secs(10),
                    threads: 2
                },
                Phase {
                    name: "peak".into(),
                    duration: Duration::from_secs(30),
                    threads: 8
                },
            ]
        );
        Ok(())
    }

    #[test]
    fn bad_phases_say_what_is_wrong() {
        let cases = [
            ("ramp:10s", "name:duration:threads"),
            ("ramp-10s-2", "name:duration:threads"),
            ("ramp:10:2", "needs a unit"),
            ("ramp:10s:0", "threads must be 1"),
            ("ramp:10s:two", "not a whole number"),
            (":10s:2", "the name"),
            ("a:1s:1,a:1s:1", "named twice"),
            ("a:1s:1,", "name:duration:threads"),
        ];
        for (text, expected) in cases {
            let err = parse_phases(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn thread_counts_are_bounded() {
        assert!(parse_thread_count("0").is_err());
        assert!(parse_thread_count("100000").is_err());
        assert!(matches!(parse_thread_count("4"), Ok(4)));
    }
}
