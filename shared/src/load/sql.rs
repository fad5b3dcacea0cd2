//! The two SQL dialects of the load plan and the only ways text enters generated SQL: a validated
//! [`Ident`] or a literal escaped by [`SqlDialect::literal`].
//!
//! Nothing else is ever interpolated, so a hostile S3 key or source key (quotes, backslashes,
//! semicolons, line breaks) can only ever end up as data.

use std::fmt;

use super::LoadError;

/// Longest identifier Redshift accepts (bytes); DuckDB allows more, the plan uses the smaller.
pub const MAX_IDENT_LEN: usize = 127;

/// A SQL identifier from the allow-list `[a-z_][a-z0-9_]*`, at most [`MAX_IDENT_LEN`] bytes.
///
/// Such a name means the same quoted or unquoted in both dialects (both fold unquoted names to
/// lower case), so it is rendered bare.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    pub fn new(name: &str) -> Result<Ident, LoadError> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if first_ok && rest_ok && name.len() <= MAX_IDENT_LEN {
            Ok(Ident(name.to_string()))
        } else {
            Err(LoadError::InvalidIdentifier(name.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `schema.table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Ident,
    pub table: Ident,
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// What Redshift's COPY needs besides the SQL: the role it reads S3 with, and the bucket's
/// region when it differs from the cluster's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedshiftCopy {
    iam_role_arn: String,
    region: Option<String>,
}

impl RedshiftCopy {
    /// Validates the role ARN (`arn:<partition>:iam::<12 digits>:role/<path and name>`) and the
    /// optional region (`[a-z0-9-]+`): a malformed setting is a configuration error up front,
    /// not a failed COPY later. Both are still escaped when rendered.
    pub fn new(iam_role_arn: &str, region: Option<&str>) -> Result<RedshiftCopy, LoadError> {
        if !valid_role_arn(iam_role_arn) {
            return Err(LoadError::InvalidIamRole(iam_role_arn.to_string()));
        }
        if let Some(r) = region {
            let ok = !r.is_empty()
                && r.len() <= 32
                && r.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !ok {
                return Err(LoadError::InvalidRegion(r.to_string()));
            }
        }
        Ok(RedshiftCopy {
            iam_role_arn: iam_role_arn.to_string(),
            region: region.map(str::to_string),
        })
    }

    pub fn iam_role_arn(&self) -> &str {
        &self.iam_role_arn
    }

    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
}

fn valid_role_arn(arn: &str) -> bool {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let Some(role) = resource.strip_prefix("role/") else {
        return false;
    };
    // IAM's own character set for role paths and names.
    partition.starts_with("aws")
        && partition
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '-')
        && account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && !role.is_empty()
        && arn.len() <= 2048
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_/-".contains(c))
}

/// A warehouse the load plan renders for. Redshift carries its COPY settings, so one value built
/// from configuration renders both the DDL and every load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlDialect {
    Redshift(RedshiftCopy),
    DuckDb,
}

impl SqlDialect {
    pub fn name(&self) -> &'static str {
        match self {
            SqlDialect::Redshift(_) => "redshift",
            SqlDialect::DuckDb => "duckdb",
        }
    }

    /// Whether a backslash inside `'…'` escapes the next character. Redshift's parser does (so
    /// a lone `\` before the closing quote would swallow it); DuckDB's standard strings do not.
    fn backslash_escapes(&self) -> bool {
        matches!(self, SqlDialect::Redshift(_))
    }

    /// `value` as a string literal: single quotes doubled, and for Redshift backslashes doubled
    /// too. NUL cannot be stored in either warehouse's VARCHAR, so it is refused rather than
    /// silently cut.
    pub fn literal(&self, value: &str) -> Result<String, LoadError> {
        if value.contains('\0') {
            return Err(LoadError::InvalidLiteral(value.to_string()));
        }
        let mut out = String::with_capacity(value.len() + 2);
        out.push('\'');
        for c in value.chars() {
            match c {
                '\'' => out.push_str("''"),
                '\\' if self.backslash_escapes() => out.push_str("\\\\"),
                c => out.push(c),
            }
        }
        out.push('\'');
        Ok(out)
    }

    /// Lexes `sql` the way this dialect's parser reads quotes and comments, and returns the
    /// string literals it contains (decoded) if it is exactly one statement (an optional trailing
    /// `;` aside), or `None` when a `;` outside quotes and comments starts another statement or a
    /// quote is left open. Executors check every generated statement with it before running it,
    /// and the tests use it to show that escaped literals decode back to the original text.
    pub fn single_statement_literals(&self, sql: &str) -> Option<Vec<String>> {
        let mut literals = Vec::new();
        let mut chars = sql.chars().peekable();
        let mut ended = false;
        while let Some(c) = chars.next() {
            if ended && !c.is_whitespace() {
                return None;
            }
            match c {
                '\'' => {
                    let mut lit = String::new();
                    loop {
                        match chars.next()? {
                            '\\' if self.backslash_escapes() => lit.push(chars.next()?),
                            '\'' if chars.peek() == Some(&'\'') => {
                                chars.next();
                                lit.push('\'');
                            }
                            '\'' => break,
                            other => lit.push(other),
                        }
                    }
                    literals.push(lit);
                }
                '"' => loop {
                    if chars.next()? == '"' {
                        if chars.peek() == Some(&'"') {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                },
                '-' if chars.peek() == Some(&'-') => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                '/' if chars.peek() == Some(&'*') => {
                    chars.next();
                    let mut prev = ' ';
                    loop {
                        let c = chars.next()?;
                        if prev == '*' && c == '/' {
                            break;
                        }
                        prev = c;
                    }
                }
                ';' => ended = true,
                _ => {}
            }
        }
        Some(literals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redshift() -> SqlDialect {
        SqlDialect::Redshift(
            RedshiftCopy::new("arn:aws:iam::123456789012:role/lago-copy", None)
                .unwrap_or_else(|e| panic!("valid test role: {e}")),
        )
    }

    #[test]
    fn identifiers_outside_the_allow_list_are_refused() {
        for ok in ["clientes", "_source_key", "lago_stage_2", "a"] {
            assert!(Ident::new(ok).is_ok(), "{ok}");
        }
        let too_long = "a".repeat(MAX_IDENT_LEN + 1);
        for bad in [
            "",
            "Clientes",
            "2fast",
            "lago.clientes",
            "x; DROP TABLE y",
            "nombre\"",
            "año",
            "a-b",
            too_long.as_str(),
        ] {
            assert!(
                matches!(Ident::new(bad), Err(LoadError::InvalidIdentifier(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn literals_double_quotes_in_both_dialects_and_backslashes_in_redshift() -> Result<(), LoadError>
    {
        // GIVEN a value with a quote, a backslash, a semicolon and a line break
        let v = "a'b\\c;\nd";
        // WHEN it is rendered as a literal
        // THEN quotes are doubled everywhere and backslashes only where they escape
        assert_eq!(SqlDialect::DuckDb.literal(v)?, "'a''b\\c;\nd'");
        assert_eq!(redshift().literal(v)?, "'a''b\\\\c;\nd'");
        Ok(())
    }

    #[test]
    fn a_nul_byte_is_refused_as_a_literal() {
        assert!(matches!(
            SqlDialect::DuckDb.literal("a\0b"),
            Err(LoadError::InvalidLiteral(_))
        ));
    }

    #[test]
    fn hostile_values_decode_back_to_themselves_inside_one_statement() -> Result<(), LoadError> {
        let hostile = [
            "x'; DROP TABLE lago.clientes; --",
            "x\\'; DROP TABLE lago.clientes; --",
            "x\\",
            "\\\\'';;\n/* */ -- \"",
            "raw/transacciones/año=2025/Ñandú 'copia' \\final\\;.csv",
        ];
        for d in [SqlDialect::DuckDb, redshift()] {
            for v in hostile {
                let sql = format!(
                    "DELETE FROM lago.transacciones WHERE _source_key = {}",
                    d.literal(v)?
                );
                assert_eq!(
                    d.single_statement_literals(&sql),
                    Some(vec![v.to_string()]),
                    "{} {sql}",
                    d.name()
                );
            }
        }
        Ok(())
    }

    #[test]
    fn the_lexer_sees_a_second_statement_that_naive_quoting_lets_in() {
        // GIVEN statements built by pasting a hostile value between quotes (what we never do)
        let naive_duckdb = "DELETE FROM t WHERE k = 'x'; DROP TABLE t; --'";
        let naive_redshift = "DELETE FROM t WHERE k = 'x\\''; DROP TABLE t; --'";
        // THEN the check executors run before each statement refuses them
        assert_eq!(
            SqlDialect::DuckDb.single_statement_literals(naive_duckdb),
            None
        );
        assert_eq!(redshift().single_statement_literals(naive_redshift), None);
        // AND a trailing semicolon alone is still one statement
        assert_eq!(
            SqlDialect::DuckDb.single_statement_literals("SELECT 'a;b';  "),
            Some(vec!["a;b".to_string()])
        );
    }

    #[test]
    fn role_arns_and_regions_are_validated() {
        assert!(RedshiftCopy::new("arn:aws:iam::123456789012:role/lago-copy", None).is_ok());
        assert!(RedshiftCopy::new(
            "arn:aws-us-gov:iam::123456789012:role/service-role/lago.copy@x",
            Some("us-gov-west-1")
        )
        .is_ok());
        for bad in [
            "",
            "arn:aws:iam::123456789012:user/bob",
            "arn:aws:iam::12345:role/x",
            "arn:aws:iam::123456789012:role/x' IAM_ROLE 'y",
            "arn:aws:s3:::bucket",
        ] {
            assert!(
                matches!(
                    RedshiftCopy::new(bad, None),
                    Err(LoadError::InvalidIamRole(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            RedshiftCopy::new("arn:aws:iam::123456789012:role/x", Some("us-east-1'")),
            Err(LoadError::InvalidRegion(_))
        ));
    }
}
