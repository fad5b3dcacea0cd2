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
    #[error("missing environment variables: {}", .0.join(", "))]
    MissingAll(Vec<&'static str>),
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

    /// The process environment, with `overrides` on top (a function's settings, read from
    /// elsewhere).
    pub fn from_process_with(overrides: impl IntoIterator<Item = (String, String)>) -> Env {
        let mut env = Env::from_process();
        env.vars.extend(overrides);
        env
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

    /// Several required settings, reporting every missing one at once.
    pub fn required_all<const N: usize>(
        &self,
        names: [&'static str; N],
    ) -> Result<[String; N], ConfigError> {
        let missing: Vec<&'static str> = names
            .iter()
            .copied()
            .filter(|name| self.optional(name).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(ConfigError::MissingAll(missing));
        }
        Ok(names.map(|name| self.optional(name).unwrap_or_default()))
    }

    /// A boolean setting (`true`/`1` or `false`/`0`), or `default` when unset.
    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(name).as_deref() {
            None => Ok(default),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(other) => Err(ConfigError::Invalid {
                name,
                value: other.to_string(),
                reason: "must be true or false".to_string(),
            }),
        }
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

    #[test]
    fn every_missing_setting_is_named_at_once_and_flags_are_strict() {
        let env = Env::from_pairs(&[
            ("A", "x"),
            ("C", "z"),
            ("T", "1"),
            ("F", "false"),
            ("Y", "yes"),
        ]);
        assert_eq!(
            env.required_all(["A", "C"]),
            Ok(["x".to_string(), "z".to_string()])
        );
        assert_eq!(
            env.required_all(["A", "B", "C", "D"]),
            Err(ConfigError::MissingAll(vec!["B", "D"]))
        );
        assert_eq!(env.flag("T", false), Ok(true));
        assert_eq!(env.flag("F", true), Ok(false));
        assert_eq!(env.flag("UNSET", true), Ok(true));
        assert!(matches!(
            env.flag("Y", false),
            Err(ConfigError::Invalid { name: "Y", .. })
        ));
    }
}
