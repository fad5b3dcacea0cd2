use std::str::FromStr;

use chrono::{TimeDelta, TimeZone, Utc};
use proptest::prelude::*;

use super::*;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("test decimal")
}

fn day(n: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 1).expect("date") + TimeDelta::days(n)
}

/// An applied trade of `user` on day `d` (noon in Bogotá), `seq` its stream position.
fn trade(user: &str, seq: u32, d: i64, side: Side, usd: &str, rate: &str) -> FeatureTrade {
    let usd_amount = dec(usd);
    let rate = dec(rate);
    FeatureTrade {
        trade: Trade {
            trade_id: Arc::from(format!("{user}-{seq}").as_str()),
            user_id: Arc::from(user),
            side,
            usd_amount,
            rate,
            executed_at: Utc.with_ymd_and_hms(2026, 11, 1, 17, 0, 0).unwrap() + TimeDelta::days(d),
            channel: None,
        },
        sequence_number: format!("{seq:06}"),
        day: day(d),
        cop_notional: (usd_amount * rate)
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero),
    }
}

#[test]
fn a_small_history_gives_the_hand_computed_features() {
    use Side::*;
    // GIVEN ana buys 100 USD at 4000 on day 0 and 50 at 4100 on day 2, sells 30 at 4200 on
    // day 9; bo buys once on day 9 (the history's last day is 9)
    let trades = [
        trade("ana", 1, 0, Buy, "100", "4000"),
        trade("ana", 2, 2, Buy, "50", "4100"),
        trade("ana", 3, 9, Sell, "30", "4200"),
        trade("bo", 4, 9, Buy, "10", "4000"),
    ];
    let (rows, not_replayable) = user_features(&trades);
    assert_eq!(not_replayable, 0);
    // THEN ana has a row a day from day 0 to 9, bo one on day 9
    let ana: Vec<_> = rows.iter().filter(|r| &*r.user_id == "ana").collect();
    assert_eq!(ana.len(), 10);
    assert_eq!(rows.iter().filter(|r| &*r.user_id == "bo").count(), 1);
    // day 2: both buys in the windows, 150 USD held, nothing realized
    let d2 = ana[2];
    assert_eq!((d2.trades_7d, d2.trades_30d), (2, 2));
    assert_eq!(d2.cop_notional_7d, dec("605000"));
    assert_eq!(d2.buy_ratio_30d, dec("1.0000"));
    assert_eq!(d2.avg_ticket_cop_30d, dec("302500.00"));
    assert_eq!(d2.net_usd_position, dec("150.00"));
    assert_eq!(d2.days_since_last_trade, 0);
    // and a label: ana bought again within the 7 days after day 0, not after day 2
    assert_eq!(ana[0].label_buy_next_7d, Some(true));
    assert_eq!(d2.label_buy_next_7d, Some(false));
    // day 8: day 0 and 2 trades left the 7-day window (days 2..=8 keeps day 2)
    let d8 = ana[8];
    assert_eq!((d8.trades_7d, d8.trades_30d), (1, 2));
    assert_eq!(d8.days_since_last_trade, 6);
    // day 9: the sell realizes 30 × (4200 − 4033.33…) on the average cost 605000 / 150
    let d9 = ana[9];
    assert_eq!(d9.net_usd_position, dec("120.00"));
    assert_eq!(d9.realized_pnl_cop, dec("5000.00"));
    assert_eq!(d9.buy_ratio_30d, dec("0.6667"));
    // the days after 2 have no complete 7-day future: no label
    assert!(ana[3..].iter().all(|r| r.label_buy_next_7d.is_none()));
    assert_eq!(ana[2].label_buy_next_7d, Some(false));
    // AND the training line puts the label first
    assert_eq!(
        training_line(ana[0]).as_deref(),
        Some("1,1,1,400000.00,400000.00,1.0000,400000.00,100.00,0.00,0")
    );
    assert_eq!(training_line(d9), None);
}

/// The features of one user and day computed directly from their definitions.
fn reference(trades: &[FeatureTrade], user: &str, d: NaiveDate, last: NaiveDate) -> FeatureRow {
    let mut mine: Vec<&FeatureTrade> = trades
        .iter()
        .filter(|t| &*t.trade.user_id == user)
        .collect();
    mine.sort_by(|a, b| a.sequence_number.cmp(&b.sequence_number));
    let mut p = Portfolio::new(user);
    let mut applied = Vec::new();
    for t in &mine {
        if t.day <= d && p.apply(&t.trade).is_ok() {
            applied.push(*t);
        }
    }
    let within = |n: i64| {
        applied
            .iter()
            .filter(|t| t.day > d - TimeDelta::days(n) && t.day <= d)
            .collect::<Vec<_>>()
    };
    let (w7, w30) = (within(7), within(30));
    let sum = |w: &[&&FeatureTrade]| w.iter().map(|t| t.cop_notional).sum::<Decimal>();
    let buys30 = w30.iter().filter(|t| t.trade.side == Side::Buy).count();
    let div = |n: Decimal, k: usize, s: u32| {
        if k == 0 {
            Decimal::ZERO
        } else {
            (n / Decimal::from(k as u64))
                .round_dp_with_strategy(s, RoundingStrategy::MidpointAwayFromZero)
        }
    };
    // Replaying every trade to know which ones apply decides the future labels too.
    let mut q = Portfolio::new(user);
    let future_buy = mine.iter().any(|t| {
        let ok = q.apply(&t.trade).is_ok();
        ok && t.trade.side == Side::Buy && t.day > d && t.day <= d + TimeDelta::days(7)
    });
    let last_trade = applied.iter().map(|t| t.day).max().unwrap_or(d);
    FeatureRow {
        user_id: Arc::from(user),
        day: d,
        trades_7d: w7.len() as u64,
        trades_30d: w30.len() as u64,
        cop_notional_7d: sum(&w7),
        cop_notional_30d: sum(&w30),
        buy_ratio_30d: div(Decimal::from(buys30 as u64), w30.len(), 4),
        avg_ticket_cop_30d: div(sum(&w30), w30.len(), 2),
        net_usd_position: p.usd_balance,
        realized_pnl_cop: p.realized_pnl_cop,
        days_since_last_trade: (d - last_trade).num_days() as u64,
        label_buy_next_7d: (d + TimeDelta::days(7) <= last).then_some(future_buy),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Any history gives, row for row, the features computed from their definitions.
    #[test]
    fn features_match_their_definitions(
        ops in proptest::collection::vec((0u8..3, 0i64..45, any::<bool>(), 1u32..500, 3900u32..4300), 1..40)
    ) {
        // Stream order follows time, as a producer's does.
        let mut ops = ops;
        ops.sort_by_key(|(_, d, ..)| *d);
        let trades: Vec<FeatureTrade> = ops
            .iter()
            .enumerate()
            .map(|(i, (u, d, buy, usd, rate))| {
                let side = if *buy { Side::Buy } else { Side::Sell };
                trade(&format!("u{u}"), i as u32, *d, side, &usd.to_string(), &rate.to_string())
            })
            .collect();
        let (rows, _) = user_features(&trades);
        let last = trades.iter().map(|t| t.day).max().unwrap_or(day(0));
        for r in &rows {
            prop_assert_eq!(r, &reference(&trades, &r.user_id, r.day, last));
        }
        // a row for every day from each user's first applied trade to the last day
        let mut users: Vec<&str> = trades.iter().map(|t| &*t.trade.user_id).collect();
        users.sort_unstable();
        users.dedup();
        for u in users {
            let mut p = Portfolio::new(u);
            let mut mine: Vec<&FeatureTrade> = trades.iter().filter(|t| &*t.trade.user_id == u).collect();
            mine.sort_by(|a, b| a.sequence_number.cmp(&b.sequence_number));
            let first = mine.iter().filter(|t| p.apply(&t.trade).is_ok()).map(|t| t.day).min();
            let n = rows.iter().filter(|r| &*r.user_id == u).count() as i64;
            prop_assert_eq!(n, first.map_or(0, |f| (last - f).num_days() + 1), "{}", u);
        }
    }
}
