//! Load phases (`ramp:10s:2,peak:30s:8`) and durations (`500ms`, `20s`, `1m30s`).

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

/// Parses a duration with `humantime`: numbers with units, run together or apart (`500ms`,
/// `20s`, `2m`, `1m30s`, `1h 30m`). It must be at least a millisecond: reports keep whole
/// milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let invalid = |reason: String| Error::InvalidValue {
        field: "duration",
        value: text.to_owned(),
        reason,
    };
    let duration = humantime::parse_duration(text.trim()).map_err(|e| invalid(e.to_string()))?;
    if duration < Duration::from_millis(1) {
        return Err(invalid("must be at least 1ms".into()));
    }
    Ok(duration)
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
        assert_eq!(parse_duration("2h")?, Duration::from_secs(7200));
        assert_eq!(parse_duration("250ms")?, Duration::from_millis(250));
        assert_eq!(parse_duration("1m30s")?, Duration::from_secs(90));
        assert_eq!(parse_duration("1h 30m")?, Duration::from_secs(5400));
        for bad in [
            "",
            "s",
            "10",
            "10x",
            "-1s",
            "0s",
            "500us",
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
            ("ramp:10:2", "time unit needed"),
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
