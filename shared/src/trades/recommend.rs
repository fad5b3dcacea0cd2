//! The built-in recommendation rule, and the wrapper that falls back to it when the model
//! endpoint fails.
//!
//! The rule compares the latest rate with the portfolio's average cost,
//! `change = (latest_rate − average_cost) / average_cost`:
//! - no USD balance → `HOLD` (nothing to evaluate);
//! - `change ≥ take_profit_pct` → `TAKE_PROFIT` (selling now realizes a gain);
//! - `change ≤ −reduce_pct` → `REDUCE` (the loss is past the stop: cut the position);
//! - `change ≤ −buy_dip_pct` → `BUY` (buying below the average lowers it);
//! - otherwise `HOLD`.
//!
//! Defaults: take profit at +3 %, buy the dip at −2 %, reduce at −8 %.

use std::fmt::{self, Write as _};

use rust_decimal::{Decimal, RoundingStrategy};
use tracing::warn;

use super::ports::{
    Action, RecommendError, Recommendation, RecommendationRequest, RecommendationSource,
    Recommender,
};

/// Thresholds of the rule, in percent of the average cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleConfig {
    pub take_profit_pct: Decimal,
    pub buy_dip_pct: Decimal,
    pub reduce_pct: Decimal,
}

impl Default for RuleConfig {
    fn default() -> Self {
        Self {
            take_profit_pct: Decimal::new(3, 0),
            buy_dip_pct: Decimal::new(2, 0),
            reduce_pct: Decimal::new(8, 0),
        }
    }
}

/// The built-in rule (see the module docs). Never fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuleRecommender {
    pub config: RuleConfig,
}

impl RuleRecommender {
    pub fn new(config: RuleConfig) -> Self {
        Self { config }
    }

    /// The rule's answer for one portfolio.
    pub fn recommend_one(&self, request: &RecommendationRequest<'_>) -> Recommendation {
        // The text goes straight into a buffer of its usual size (one allocation).
        fn rule(action: Action, text: fmt::Arguments<'_>) -> Recommendation {
            let mut reason = String::with_capacity(120);
            // Writing to a String cannot fail.
            let _ = reason.write_fmt(text);
            Recommendation {
                action,
                reason,
                source: RecommendationSource::Rule,
            }
        }
        let rate = request.latest_rate;
        let Some(avg) = request.portfolio.average_cost().filter(|a| !a.is_zero()) else {
            return rule(
                Action::Hold,
                format_args!("no USD position to evaluate at {rate} COP/USD"),
            );
        };
        // Compared unrounded; shown rounded to 2 places.
        let change = rate
            .checked_sub(avg)
            .and_then(|d| d.checked_mul(Decimal::ONE_HUNDRED))
            .and_then(|d| d.checked_div(avg));
        let Some(change) = change else {
            return rule(
                Action::Hold,
                format_args!("rate {rate} cannot be compared with the average cost {avg}"),
            );
        };
        let change_pct = change.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        let c = &self.config;
        if change >= c.take_profit_pct {
            rule(
                Action::TakeProfit,
                format_args!("rate {rate} is {change_pct}% above the average cost {avg} COP/USD"),
            )
        } else if change <= -c.reduce_pct {
            rule(
                Action::Reduce,
                format_args!(
                    "rate {rate} is {}% below the average cost {avg} COP/USD, past the {}% stop",
                    -change_pct, c.reduce_pct
                ),
            )
        } else if change <= -c.buy_dip_pct {
            rule(
                Action::Buy,
                format_args!(
                    "rate {rate} is {}% below the average cost {avg} COP/USD: buying lowers it",
                    -change_pct
                ),
            )
        } else {
            rule(
                Action::Hold,
                format_args!(
                    "rate {rate} is within {change_pct}% of the average cost {avg} COP/USD"
                ),
            )
        }
    }

    /// The rule's answers for a batch of requests, in order.
    pub fn recommend_all(&self, requests: &[RecommendationRequest<'_>]) -> Vec<Recommendation> {
        requests.iter().map(|r| self.recommend_one(r)).collect()
    }
}

impl Recommender for RuleRecommender {
    async fn recommend(
        &self,
        requests: &[RecommendationRequest<'_>],
    ) -> Result<Vec<Recommendation>, RecommendError> {
        Ok(self.recommend_all(requests))
    }
}

/// The model when configured, the rule when not or when the model fails (`source: "rule"`).
/// Never fails, so a model outage never fails a batch.
#[derive(Debug, Clone, Default)]
pub struct WithRuleFallback<M> {
    pub model: Option<M>,
    pub rule: RuleRecommender,
}

impl<M> WithRuleFallback<M> {
    pub fn new(model: Option<M>, rule: RuleRecommender) -> Self {
        Self { model, rule }
    }
}

impl<M: Recommender + Sync> Recommender for WithRuleFallback<M> {
    async fn recommend(
        &self,
        requests: &[RecommendationRequest<'_>],
    ) -> Result<Vec<Recommendation>, RecommendError> {
        if let Some(model) = &self.model {
            match model.recommend(requests).await {
                Ok(recs) if recs.len() == requests.len() => return Ok(recs),
                Ok(recs) => warn!(
                    expected = requests.len(),
                    got = recs.len(),
                    "recommendation model answered the wrong count; using the rule"
                ),
                Err(error) => warn!(
                    error = %error,
                    "recommendation model failed; using the rule"
                ),
            }
        }
        Ok(self.rule.recommend_all(requests))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trades::portfolio::Portfolio;
    use crate::trades::ports::BoxError;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).expect("test decimal")
    }

    fn portfolio(usd: &str, basis: &str) -> Portfolio {
        let mut p = Portfolio::new("u");
        p.usd_balance = dec(usd);
        p.cost_basis_cop = dec(basis);
        p
    }

    fn action(usd: &str, basis: &str, rate: &str) -> Action {
        let p = portfolio(usd, basis);
        RuleRecommender::default()
            .recommend_one(&RecommendationRequest {
                portfolio: &p,
                latest_rate: dec(rate),
            })
            .action
    }

    #[test]
    fn rule_thresholds() {
        // average cost 4000.0000
        assert_eq!(action("100.00", "400000.00", "4120"), Action::TakeProfit); // +3 %
        assert_eq!(action("100.00", "400000.00", "4119.99"), Action::Hold);
        assert_eq!(action("100.00", "400000.00", "3920"), Action::Buy); // −2 %
        assert_eq!(action("100.00", "400000.00", "3680"), Action::Reduce); // −8 %
        assert_eq!(action("0.00", "0.00", "3680"), Action::Hold);
    }

    struct FailingModel;

    impl Recommender for FailingModel {
        async fn recommend(
            &self,
            _requests: &[RecommendationRequest<'_>],
        ) -> Result<Vec<Recommendation>, RecommendError> {
            let cause: BoxError = "endpoint timed out".into();
            Err(RecommendError::Model(cause))
        }
    }

    #[test]
    fn model_failure_falls_back_to_the_rule() -> Result<(), RecommendError> {
        // GIVEN a model that fails
        let recommender = WithRuleFallback::new(Some(FailingModel), RuleRecommender::default());
        let p = portfolio("100.00", "400000.00");
        // WHEN asked
        let recs = pollster::block_on(recommender.recommend(&[RecommendationRequest {
            portfolio: &p,
            latest_rate: dec("4200"),
        }]))?;
        // THEN the rule answers, and says so
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].action, Action::TakeProfit);
        assert_eq!(recs[0].source, RecommendationSource::Rule);
        assert_eq!(
            serde_json::to_string(&recs[0].source).unwrap_or_default(),
            "\"rule\""
        );
        Ok(())
    }
}
