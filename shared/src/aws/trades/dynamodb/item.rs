//! Portfolio and decision items: written from the domain types, read back with the scale
//! DynamoDB's number normalisation drops restored.

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::trades::ports::{Decision, DecisionOutcome, Recommendation, StoredPortfolio};
use crate::trades::trade::Side;
use crate::trades::Portfolio;

/// A stored item that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    #[error("attribute {0} is missing")]
    Missing(&'static str),
    #[error("attribute {name} is not of type {expected}")]
    WrongType {
        name: &'static str,
        expected: &'static str,
    },
    #[error("attribute {name} = {value:?} is not a valid number")]
    Number { name: &'static str, value: String },
    #[error("attribute {name} = {value:?} has more than {scale} decimals")]
    Scale {
        name: &'static str,
        value: String,
        scale: u32,
    },
    #[error("attribute {name} = {value:?} is not an RFC 3339 timestamp")]
    Timestamp { name: &'static str, value: String },
    #[error("attribute {name} = {value:?} is not a known value")]
    Enum { name: &'static str, value: String },
}

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: Decimal) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn timestamp(t: DateTime<Utc>) -> AttributeValue {
    s(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// The serde name of a unit enum variant (`TAKE_PROFIT`, `rule`).
pub(super) fn enum_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}

/// The portfolio item at `version`.
pub fn portfolio_item(p: &Portfolio, version: u64) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::with_capacity(12);
    item.insert("user_id".to_string(), s(&p.user_id));
    item.insert(
        "version".to_string(),
        AttributeValue::N(version.to_string()),
    );
    item.insert("usd_balance".to_string(), n(p.usd_balance));
    item.insert("cost_basis_cop".to_string(), n(p.cost_basis_cop));
    item.insert("realized_pnl_cop".to_string(), n(p.realized_pnl_cop));
    item.insert(
        "trades_applied".to_string(),
        AttributeValue::N(p.trades_applied.to_string()),
    );
    if let Some(mut avg) = p.average_cost() {
        // Derived, stored for readers of the table (dashboards, the model's training data);
        // never read back. Always 4 places, like a rate.
        if avg.scale() < 4 {
            avg.rescale(4);
        }
        item.insert("average_cost_cop".to_string(), n(avg));
    }
    if let Some(id) = &p.last_trade_id {
        item.insert("last_trade_id".to_string(), s(id));
    }
    if let Some(t) = p.last_executed_at {
        item.insert("last_executed_at".to_string(), timestamp(t));
    }
    if let Some(rate) = p.last_rate {
        item.insert("last_rate".to_string(), n(rate));
    }
    if let Some(rec) = &p.recommendation {
        item.insert(
            "recommendation".to_string(),
            AttributeValue::M(HashMap::from([
                ("action".to_string(), s(enum_name(&rec.action))),
                ("reason".to_string(), s(&rec.reason)),
                ("source".to_string(), s(enum_name(&rec.source))),
            ])),
        );
    }
    if let Some(t) = p.updated_at {
        item.insert("updated_at".to_string(), timestamp(t));
    }
    item
}

/// The decision item of one decided trade, written by the commit that stores the portfolio
/// at `portfolio_version`.
pub fn decision_item(
    d: &Decision<'_>,
    portfolio_version: u64,
    decided_at: Option<DateTime<Utc>>,
) -> HashMap<String, AttributeValue> {
    let t = d.trade;
    let mut item = HashMap::with_capacity(16);
    item.insert("trade_id".to_string(), s(&*t.trade_id));
    item.insert("user_id".to_string(), s(&*t.user_id));
    item.insert("side".to_string(), s(t.side.as_str()));
    item.insert("usd_amount".to_string(), n(t.usd_amount));
    item.insert("rate".to_string(), n(t.rate));
    item.insert("executed_at".to_string(), timestamp(t.executed_at));
    if let Some(channel) = &t.channel {
        item.insert("channel".to_string(), s(&**channel));
    }
    item.insert("sequence_number".to_string(), s(d.sequence_number));
    if let Some(sub) = d.sub_sequence {
        item.insert(
            "sub_sequence_number".to_string(),
            AttributeValue::N(sub.to_string()),
        );
    }
    item.insert(
        "portfolio_version".to_string(),
        AttributeValue::N(portfolio_version.to_string()),
    );
    if let Some(at) = decided_at {
        item.insert("decided_at".to_string(), timestamp(at));
    }
    match d.outcome {
        DecisionOutcome::Applied(a) => {
            item.insert("outcome".to_string(), s("APPLIED"));
            item.insert("cop_amount".to_string(), n(a.cop_amount));
            if a.side == Side::Sell {
                item.insert("removed_cop".to_string(), n(a.removed_cop));
                item.insert("realized_pnl_cop".to_string(), n(a.realized_pnl_cop));
            }
            item.insert("usd_balance_after".to_string(), n(a.usd_balance));
            item.insert("cost_basis_cop_after".to_string(), n(a.cost_basis_cop));
        }
        DecisionOutcome::Rejected(rejection) => {
            item.insert("outcome".to_string(), s("REJECTED"));
            item.insert("reason".to_string(), s(rejection.code()));
            item.insert("detail".to_string(), s(rejection.to_string()));
        }
    }
    item
}

type Item = HashMap<String, AttributeValue>;

pub(super) fn get_s<'a>(item: &'a Item, name: &'static str) -> Result<Option<&'a str>, ItemError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v)),
        Some(_) => Err(ItemError::WrongType {
            name,
            expected: "S",
        }),
    }
}

pub(super) fn get_n<'a>(item: &'a Item, name: &'static str) -> Result<Option<&'a str>, ItemError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => Ok(Some(v)),
        Some(_) => Err(ItemError::WrongType {
            name,
            expected: "N",
        }),
    }
}

pub(super) fn required<T>(value: Option<T>, name: &'static str) -> Result<T, ItemError> {
    value.ok_or(ItemError::Missing(name))
}

/// A stored number as a decimal with exactly `scale` places (DynamoDB drops trailing zeros).
pub(super) fn decimal(value: &str, name: &'static str, scale: u32) -> Result<Decimal, ItemError> {
    let parsed = if value.contains(['e', 'E']) {
        Decimal::from_scientific(value)
    } else {
        Decimal::from_str(value)
    };
    let mut d = parsed
        .map_err(|_| ItemError::Number {
            name,
            value: value.to_string(),
        })?
        .normalize();
    if d.scale() > scale {
        return Err(ItemError::Scale {
            name,
            value: value.to_string(),
            scale,
        });
    }
    d.rescale(scale);
    Ok(d)
}

pub(super) fn integer(value: &str, name: &'static str) -> Result<u64, ItemError> {
    value.parse().map_err(|_| ItemError::Number {
        name,
        value: value.to_string(),
    })
}

pub(super) fn time(value: &str, name: &'static str) -> Result<DateTime<Utc>, ItemError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ItemError::Timestamp {
            name,
            value: value.to_string(),
        })
}

pub(super) fn enum_value<T: DeserializeOwned>(
    value: &str,
    name: &'static str,
) -> Result<T, ItemError> {
    serde_json::from_value(serde_json::Value::String(value.to_string())).map_err(|_| {
        ItemError::Enum {
            name,
            value: value.to_string(),
        }
    })
}

/// Reads a portfolio item back.
pub fn portfolio_from_item(item: &Item) -> Result<StoredPortfolio, ItemError> {
    let amount = |name: &'static str| -> Result<Decimal, ItemError> {
        decimal(required(get_n(item, name)?, name)?, name, 2)
    };
    let recommendation = match item.get("recommendation") {
        None | Some(AttributeValue::Null(_)) => None,
        Some(AttributeValue::M(m)) => Some(Recommendation {
            action: enum_value(required(get_s(m, "action")?, "action")?, "action")?,
            reason: required(get_s(m, "reason")?, "reason")?.to_string(),
            source: enum_value(required(get_s(m, "source")?, "source")?, "source")?,
        }),
        Some(_) => {
            return Err(ItemError::WrongType {
                name: "recommendation",
                expected: "M",
            })
        }
    };
    let portfolio = Portfolio {
        user_id: required(get_s(item, "user_id")?, "user_id")?.to_string(),
        usd_balance: amount("usd_balance")?,
        cost_basis_cop: amount("cost_basis_cop")?,
        realized_pnl_cop: amount("realized_pnl_cop")?,
        trades_applied: integer(
            required(get_n(item, "trades_applied")?, "trades_applied")?,
            "trades_applied",
        )?,
        last_trade_id: get_s(item, "last_trade_id")?.map(str::to_string),
        last_executed_at: get_s(item, "last_executed_at")?
            .map(|t| time(t, "last_executed_at"))
            .transpose()?,
        last_rate: get_n(item, "last_rate")?
            .map(|r| decimal(r, "last_rate", 4))
            .transpose()?,
        recommendation,
        updated_at: get_s(item, "updated_at")?
            .map(|t| time(t, "updated_at"))
            .transpose()?,
    };
    let version = integer(required(get_n(item, "version")?, "version")?, "version")?;
    Ok(StoredPortfolio {
        portfolio,
        version,
        last_sequence: get_s(item, "last_sequence")?.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{trade, TestResult};
    use super::*;
    use crate::trades::ports::{Action, RecommendationSource};

    #[test]
    fn a_portfolio_survives_dynamodb_number_normalization() -> TestResult {
        // GIVEN a portfolio after a buy, with a recommendation
        let mut p = Portfolio::new("ana");
        p.apply(&trade("t1", "BUY", "150", "4033.5")?)?;
        p.recommendation = Some(Recommendation {
            action: Action::TakeProfit,
            reason: "up 4%".into(),
            source: RecommendationSource::Model,
        });
        p.updated_at = Some(time("2026-11-28T17:00:01Z", "t")?);
        let mut item = portfolio_item(&p, 7);
        assert_eq!(
            item.get("usd_balance"),
            Some(&AttributeValue::N("150.00".into()))
        );
        assert_eq!(
            item.get("cost_basis_cop"),
            Some(&AttributeValue::N("605025.00".into()))
        );
        assert_eq!(
            item.get("last_rate"),
            Some(&AttributeValue::N("4033.5000".into()))
        );
        assert_eq!(
            item.get("average_cost_cop"),
            Some(&AttributeValue::N("4033.5000".into()))
        );
        // WHEN DynamoDB hands the numbers back normalized
        item.insert("usd_balance".into(), AttributeValue::N("150".into()));
        item.insert("cost_basis_cop".into(), AttributeValue::N("605025".into()));
        item.insert("last_rate".into(), AttributeValue::N("4033.5".into()));
        // THEN the portfolio reads back identical, scales included
        let stored = portfolio_from_item(&item)?;
        assert_eq!(stored.version, 7);
        assert_eq!(stored.portfolio, p);
        assert_eq!(stored.portfolio.usd_balance.to_string(), "150.00");
        assert_eq!(
            stored.portfolio.last_rate.map(|r| r.to_string()).as_deref(),
            Some("4033.5000")
        );
        Ok(())
    }

    #[test]
    fn an_amount_with_too_many_decimals_is_refused() {
        let mut item = portfolio_item(&Portfolio::new("ana"), 1);
        item.insert("usd_balance".into(), AttributeValue::N("1.005".into()));
        assert!(matches!(
            portfolio_from_item(&item),
            Err(ItemError::Scale {
                name: "usd_balance",
                ..
            })
        ));
        item.insert("usd_balance".into(), AttributeValue::S("1".into()));
        assert!(matches!(
            portfolio_from_item(&item),
            Err(ItemError::WrongType {
                name: "usd_balance",
                ..
            })
        ));
    }

    #[test]
    fn decision_items_record_the_outcome() -> TestResult {
        let mut p = Portfolio::new("ana");
        let buy = trade("t1", "BUY", "10", "4000")?;
        let applied = p.apply(&buy)?;
        let d = Decision {
            trade: &buy,
            sequence_number: "000001",
            sub_sequence: None,
            outcome: DecisionOutcome::Applied(applied),
        };
        let item = decision_item(&d, 3, None);
        assert_eq!(item.get("outcome"), Some(&s("APPLIED")));
        assert_eq!(
            item.get("cop_amount"),
            Some(&AttributeValue::N("40000.00".into()))
        );
        assert_eq!(
            item.get("usd_amount"),
            Some(&AttributeValue::N("10.00".into()))
        );
        assert_eq!(
            item.get("portfolio_version"),
            Some(&AttributeValue::N("3".into()))
        );
        assert_eq!(item.get("removed_cop"), None);
        let sell = trade("t2", "SELL", "11", "4000")?;
        let rejection = match p.apply(&sell) {
            Err(r) => r,
            Ok(_) => return Err("the oversell was applied".into()),
        };
        let d = Decision {
            trade: &sell,
            sequence_number: "000002",
            sub_sequence: None,
            outcome: DecisionOutcome::Rejected(rejection),
        };
        let item = decision_item(&d, 3, None);
        assert_eq!(item.get("outcome"), Some(&s("REJECTED")));
        assert_eq!(item.get("reason"), Some(&s("insufficient_balance")));
        Ok(())
    }
}
