//! Reading a cancelled transaction's reasons: a conflict to redo, or an error to retry or give
//! up on.

use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason};

use crate::trades::ports::{Conflict, Decision};

/// What a `TransactionCanceledException` means for a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancellation {
    /// Only conditions failed (or a concurrent transaction touched an item): nothing was
    /// written, and the processor redoes the user.
    Conflict(Conflict),
    /// Throttling inside the transaction, or reasons that cannot be read: try later.
    Transient(String),
    /// A reason that will not go away (validation, item size, …).
    Permanent(String),
}

/// Reads the cancellation reasons of a commit's transaction: one per item, in order — the
/// decisions, then the portfolio put.
pub fn read_cancellation(
    decisions: &[Decision<'_>],
    reasons: &[CancellationReason],
) -> Cancellation {
    let mut conflict = Conflict::default();
    let mut transient_reasons = Vec::new();
    let mut permanent_reasons = Vec::new();
    for (index, reason) in reasons.iter().enumerate() {
        let code = reason.code().unwrap_or("None");
        let describe = || format!("{code} at item {index}");
        match code {
            "None" => {}
            "ConditionalCheckFailed" => match decisions.get(index) {
                Some(decision) => {
                    let stored_id = reason.item().and_then(|item| match item.get("trade_id") {
                        Some(AttributeValue::S(id)) => Some(id.clone()),
                        _ => None,
                    });
                    conflict
                        .already_decided
                        .push(stored_id.unwrap_or_else(|| decision.trade.trade_id.to_string()));
                }
                None => conflict.version_moved = true,
            },
            // Another transaction was writing one of the items: the state it leaves is read
            // again before redoing.
            "TransactionConflict" => conflict.version_moved = true,
            "ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded" => {
                transient_reasons.push(describe())
            }
            _ => permanent_reasons.push(describe()),
        }
    }
    if !permanent_reasons.is_empty() {
        Cancellation::Permanent(permanent_reasons.join(", "))
    } else if !transient_reasons.is_empty() {
        Cancellation::Transient(transient_reasons.join(", "))
    } else if conflict.version_moved || !conflict.already_decided.is_empty() {
        Cancellation::Conflict(conflict)
    } else {
        Cancellation::Transient(format!(
            "no usable cancellation reason among {}",
            reasons.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{trade, TestResult};
    use super::super::item::s;
    use super::*;
    use crate::trades::ports::DecisionOutcome;
    use crate::trades::Portfolio;

    fn reason(code: &str, trade_id: Option<&str>) -> CancellationReason {
        let mut b = CancellationReason::builder().code(code);
        if let Some(id) = trade_id {
            b = b.item("trade_id", s(id));
        }
        b.build()
    }

    #[test]
    fn cancellation_reasons_become_conflicts_or_errors() -> TestResult {
        let (t1, t2) = (
            trade("t1", "BUY", "1", "4000")?,
            trade("t2", "BUY", "1", "4000")?,
        );
        let mut p = Portfolio::new("ana");
        let decisions = [
            Decision {
                trade: &t1,
                sequence_number: "1",
                sub_sequence: None,
                outcome: DecisionOutcome::Applied(p.apply(&t1)?),
            },
            Decision {
                trade: &t2,
                sequence_number: "2",
                sub_sequence: None,
                outcome: DecisionOutcome::Applied(p.apply(&t2)?),
            },
        ];
        // a decision item that exists: the trade id, from the returned item
        let got = read_cancellation(
            &decisions,
            &[
                reason("None", None),
                reason("ConditionalCheckFailed", Some("t2")),
                reason("None", None),
            ],
        );
        assert_eq!(
            got,
            Cancellation::Conflict(Conflict {
                version_moved: false,
                already_decided: vec!["t2".into()]
            })
        );
        // the portfolio's condition: the version moved
        let got = read_cancellation(
            &decisions,
            &[
                reason("None", None),
                reason("None", None),
                reason("ConditionalCheckFailed", None),
            ],
        );
        assert_eq!(
            got,
            Cancellation::Conflict(Conflict {
                version_moved: true,
                already_decided: vec![]
            })
        );
        // throttling inside the transaction is transient, a validation error permanent
        let got = read_cancellation(
            &decisions,
            &[
                reason("ThrottlingError", None),
                reason("None", None),
                reason("None", None),
            ],
        );
        assert!(matches!(got, Cancellation::Transient(_)));
        let got = read_cancellation(&decisions, &[reason("ValidationError", None)]);
        assert!(matches!(got, Cancellation::Permanent(_)));
        assert!(matches!(
            read_cancellation(&decisions, &[]),
            Cancellation::Transient(_)
        ));
        Ok(())
    }
}
