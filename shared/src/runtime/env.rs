//! Reading a function's configuration from its environment, once, at start-up: a missing or
//! malformed setting stops the init with a message naming it, never a panic mid-invocation.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

/// A setting that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("set exactly one of {0}")]
    OneOf(&'static str),
}

/// Where settings come from: the process environment, or a map in tests.
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars().collect(),
        }
    }

    /// Settings given as pairs (tests).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Env {
        Env {
            vars: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The value, or `None` when unset or blank.
    pub fn optional(&self, name: &'static str) -> Option<String> {
        self.vars
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    /// A parsed value, or `default` when unset.
    pub fn parsed<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
                value: v,
            }),
        }
    }

    /// A parsed value that must lie in `range`.
    pub fn in_range<T>(
        &self,
        name: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
        T::Err: Display,
    {
        let v = self.parsed(name, default)?;
        if range.contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError::Invalid {
                name,
                value: v.to_string(),
                reason: format!("must be between {} and {}", range.start(), range.end()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_required_parsed_and_bounded() {
        let env = Env::from_pairs(&[("A", " x "), ("N", "12"), ("BAD", "z"), ("BLANK", " ")]);
        assert_eq!(env.required("A"), Ok("x".to_string()));
        assert_eq!(env.required("BLANK"), Err(ConfigError::Missing("BLANK")));
        assert_eq!(env.parsed("N", 1u32), Ok(12));
        assert_eq!(env.parsed("UNSET", 7u32), Ok(7));
        assert!(matches!(
            env.parsed("BAD", 1u32),
            Err(ConfigError::Invalid { name: "BAD", .. })
        ));
        assert!(env.in_range("N", 1u32, 1..=10).is_err());
        assert_eq!(env.in_range("N", 1u32, 1..=64), Ok(12));
    }
}
