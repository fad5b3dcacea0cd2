//! Property tests of the processor: exactly-once, in-order application under any delivery.
//!
//! A scenario is a valid per-user trade sequence (buys and sells, some sells above the balance)
//! delivered as a Kinesis shard would: users interleaved, earlier records redelivered later,
//! cut into batches of random sizes, with transient store failures (throttled commits, commits
//! that land but time out, failed loads) after which the stream resumes from the reported
//! sequence number. Transactions are as small as 2 items to exercise multi-transaction users.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::archive::ArchiveStatus;
use super::memory::{FailureMode, Latency, MemoryPortfolioStore};
use super::outcome::{BatchOutcome, NotificationKind};
use super::portfolio::Portfolio;
use super::processor::{ProcessorConfig, Record, RecordData, RetryPolicy, TradeProcessor};
use super::trade::{Side, Trade};

#[derive(Debug, Clone)]
enum Fault {
    Commit(u64, FailureMode),
    Load(u64),
}

#[derive(Debug, Clone)]
struct Scenario {
    /// Per user: (is_buy, cents, rate in 1e-4 COP).
    users: Vec<Vec<(bool, u64, u64)>>,
    /// Which user's next trade comes next (modulo the users with trades left).
    picks: Vec<usize>,
    /// (record to redeliver, how far after it).
    redeliveries: Vec<(usize, usize)>,
    batch_sizes: Vec<usize>,
    faults: Vec<Fault>,
    max_items: usize,
    lookup: bool,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (1u64..40).prop_map(|n| Fault::Commit(n, FailureMode::Transient)),
        (1u64..40).prop_map(|n| Fault::Commit(n, FailureMode::TransientAfterWrite)),
        (1u64..12).prop_map(Fault::Load),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let trade = (
        proptest::bool::weighted(0.6),
        1u64..60_000,
        39_000_000u64..44_000_000,
    );
    (
        proptest::collection::vec(proptest::collection::vec(trade, 1..24), 1..5),
        proptest::collection::vec(any::<usize>(), 0..100),
        proptest::collection::vec((any::<usize>(), any::<usize>()), 0..16),
        proptest::collection::vec(1usize..14, 1..6),
        proptest::collection::vec(fault(), 0..5),
        prop_oneof![Just(2usize), Just(3), Just(5), Just(100)],
        any::<bool>(),
    )
        .prop_map(
            |(users, picks, redeliveries, batch_sizes, faults, max_items, lookup)| Scenario {
                users,
                picks,
                redeliveries,
                batch_sizes,
                faults,
                max_items,
                lookup,
            },
        )
}

fn start() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_795_900_000, 0).unwrap_or_default()
}

struct Built {
    /// The delivered stream (with redeliveries), one JSON line per record.
    lines: Vec<String>,
    /// Every distinct trade, per user, in order.
    trades: BTreeMap<String, Vec<Trade>>,
}

fn build(s: &Scenario) -> Result<Built, TestCaseError> {
    let mut per_user: Vec<Vec<String>> = Vec::new();
    let mut trades: BTreeMap<String, Vec<Trade>> = BTreeMap::new();
    let mut clock = 0i64;
    for (u, ops) in s.users.iter().enumerate() {
        let user = format!("user-{u}");
        let mut lines = Vec::new();
        for (k, (is_buy, cents, rate)) in ops.iter().enumerate() {
            clock += 1;
            let at = start() + TimeDelta::seconds(clock);
            let line = format!(
                r#"{{"trade_id":"{user}-t{k}","user_id":"{user}","side":"{}","usd_amount":"{}.{:02}","rate":{}.{:04},"executed_at":"{}"}}"#,
                if *is_buy { "BUY" } else { "sell" },
                cents / 100,
                cents % 100,
                rate / 10_000,
                rate % 10_000,
                at.to_rfc3339()
            );
            let trade = Trade::parse(line.as_bytes())
                .map_err(|e| TestCaseError::fail(format!("generated an invalid trade: {e}")))?;
            trades.entry(user.clone()).or_default().push(trade);
            lines.push(line);
        }
        per_user.push(lines);
    }
    // Interleave, keeping each user's order.
    let mut cursors = vec![0usize; per_user.len()];
    let mut lines = Vec::new();
    let mut picks = s.picks.iter();
    loop {
        let open: Vec<usize> = (0..per_user.len())
            .filter(|u| cursors[*u] < per_user[*u].len())
            .collect();
        if open.is_empty() {
            break;
        }
        let u = open[picks.next().copied().unwrap_or(0) % open.len()];
        lines.push(per_user[u][cursors[u]].clone());
        cursors[u] += 1;
    }
    // Redeliver copies after their original.
    for (src, gap) in &s.redeliveries {
        let src = src % lines.len();
        let at = src + 1 + gap % (lines.len() - src);
        let copy = lines[src].clone();
        lines.insert(at, copy);
    }
    Ok(Built { lines, trades })
}

/// What delivering the stream produced, summed over every batch attempt.
#[derive(Default)]
struct Delivered {
    applied: u64,
    rejected: u64,
    attempts: u64,
    /// The sequence numbers of the archive lines (a record decided beyond a batch's failure
    /// point is archived again, as a duplicate, when it is re-sent).
    archived: BTreeSet<String>,
    /// trade id → the statuses of its archive lines that decided it (not duplicates).
    archived_decisions: HashMap<String, Vec<ArchiveStatus>>,
    /// trade id → notifications received.
    notified: HashMap<String, Vec<NotificationKind>>,
    /// user → (Σ buy cost, Σ removed, Σ realized) from the confirmations.
    flows: HashMap<String, (Decimal, Decimal, Decimal)>,
}

/// How the processor runs: the sequential reference, or many users at once with a store
/// latency and, maybe, retries within a deadline.
#[derive(Debug, Clone, Copy)]
struct Mode {
    commit_concurrency: usize,
    /// Each store call waits a random time in `[0, latency_jitter]`.
    latency_jitter: Duration,
    /// Retry transient failures inside the batch (a deadline far away).
    retry_within: bool,
}

impl Mode {
    /// The reference: one user after another, a store that answers at once, no retries.
    fn sequential() -> Self {
        Self {
            commit_concurrency: 1,
            latency_jitter: Duration::ZERO,
            retry_within: false,
        }
    }
}

fn mode() -> impl Strategy<Value = Mode> {
    (1usize..12, 0u64..1_500, any::<bool>()).prop_map(|(concurrency, micros, retry_within)| Mode {
        commit_concurrency: concurrency,
        latency_jitter: Duration::from_micros(micros),
        retry_within,
    })
}

fn deliver_all(
    s: &Scenario,
    built: &Built,
    mode: &Mode,
) -> Result<(TradeProcessor<MemoryPortfolioStore>, Delivered), TestCaseError> {
    let store = if s.lookup {
        MemoryPortfolioStore::new()
    } else {
        MemoryPortfolioStore::without_decision_lookup()
    }
    .with_latency(Latency {
        base: Duration::ZERO,
        jitter: mode.latency_jitter,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for f in &s.faults {
        match f {
            Fault::Commit(n, mode) => store.fail_commit(*n, *mode),
            Fault::Load(n) => store.fail_load(*n),
        }
    }
    let processor = TradeProcessor::new(store).with_config(ProcessorConfig {
        max_transaction_items: s.max_items,
        commit_concurrency: mode.commit_concurrency,
        retry: RetryPolicy {
            first_backoff: Duration::from_micros(200),
            max_backoff: Duration::from_millis(2),
        },
        ..ProcessorConfig::default()
    });
    let seqs: Vec<String> = (0..built.lines.len()).map(|i| format!("{i:08}")).collect();
    let mut out = Delivered::default();
    let mut pos = 0usize;
    while pos < built.lines.len() {
        out.attempts += 1;
        prop_assert!(out.attempts < 2_000, "no progress");
        let size = s.batch_sizes[out.attempts as usize % s.batch_sizes.len()];
        let end = (pos + size).min(built.lines.len());
        let records: Vec<Record<'_>> = (pos..end)
            .map(|i| Record {
                shard_id: "shardId-000000000000",
                sequence_number: &seqs[i],
                sub_sequence: None,
                data: RecordData::Bytes(built.lines[i].as_bytes()),
                arrived_at: None,
            })
            .collect();
        let outcome: BatchOutcome = if mode.retry_within {
            let deadline = Instant::now() + Duration::from_secs(60);
            runtime.block_on(processor.process_batch_within(&records, start(), deadline))
        } else if mode.latency_jitter.is_zero() {
            pollster::block_on(processor.process_batch(&records, start()))
        } else {
            runtime.block_on(processor.process_batch(&records, start()))
        };
        out.applied += outcome.applied;
        out.rejected += outcome.rejected_total();
        out.archived
            .extend(outcome.archive.iter().map(|t| t.sequence_number.clone()));
        for line in outcome
            .archive
            .iter()
            .filter(|l| l.status != ArchiveStatus::Duplicate)
        {
            out.archived_decisions
                .entry(line.trade.trade_id.to_string())
                .or_default()
                .push(line.status);
        }
        for n in &outcome.notifications {
            out.notified
                .entry(n.trade_id.to_string())
                .or_default()
                .push(n.kind);
            if n.kind == NotificationKind::TradeConfirmed {
                let flow = out.flows.entry(n.user_id.to_string()).or_default();
                let cop = n.cop_amount.unwrap_or_default();
                match n.side {
                    Side::Buy => flow.0 += cop,
                    Side::Sell => {
                        let realized = n.realized_pnl_cop.unwrap_or_default();
                        flow.1 += cop - realized;
                        flow.2 += realized;
                    }
                }
            }
        }
        pos = match outcome.batch_item_failure {
            Some(seq) => {
                let at = seqs[pos..end]
                    .iter()
                    .position(|s| *s == seq)
                    .map(|i| pos + i);
                prop_assert!(at.is_some(), "failure {seq} outside the batch");
                at.unwrap_or(end)
            }
            None => end,
        };
    }
    Ok((processor, out))
}

fn money(
    p: &Portfolio,
) -> (
    Decimal,
    Decimal,
    Decimal,
    u64,
    Option<String>,
    Option<Decimal>,
) {
    (
        p.usd_balance,
        p.cost_basis_cop,
        p.realized_pnl_cop,
        p.trades_applied,
        p.last_trade_id.clone(),
        p.last_rate,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// Any delivery yields exactly the portfolios of applying each trade once, in order; every
    /// trade is decided once (applied or rejected) and, without ambiguous failures, notified
    /// once; the raw archive holds every delivered record exactly once; COP is conserved.
    #[test]
    fn any_delivery_applies_each_trade_exactly_once(s in scenario()) {
        let built = build(&s)?;
        let (processor, out) = deliver_all(&s, &built, &Mode::sequential())?;
        let store = processor.store();

        let mut expected_applied = 0u64;
        let mut expected_rejected = 0u64;
        for (user, trades) in &built.trades {
            // The reference: each trade applied once, sequentially.
            let mut reference = Portfolio::new(user.as_str());
            for t in trades {
                let applied = reference.apply(t).is_ok();
                expected_applied += u64::from(applied);
                expected_rejected += u64::from(!applied);
                prop_assert_eq!(store.decision(&t.trade_id), Some(applied), "{}", t.trade_id);
            }
            let stored = store.portfolio(user);
            prop_assert!(stored.is_some(), "no portfolio for {}", user);
            let stored = stored.map(|s| s.portfolio).unwrap_or_else(|| Portfolio::new(""));
            prop_assert_eq!(money(&stored), money(&reference), "{}", user);
            prop_assert_eq!(stored.last_executed_at, reference.last_executed_at);
        }
        prop_assert_eq!(store.decided_count() as u64, expected_applied + expected_rejected);

        // The archive: every delivered record.
        let delivered: BTreeSet<String> = (0..built.lines.len()).map(|i| format!("{i:08}")).collect();
        prop_assert_eq!(&out.archived, &delivered);

        let ambiguous = s
            .faults
            .iter()
            .any(|f| matches!(f, Fault::Commit(_, FailureMode::TransientAfterWrite)));
        if !ambiguous {
            prop_assert_eq!(out.applied, expected_applied);
            prop_assert_eq!(out.rejected, expected_rejected);
            prop_assert_eq!(out.notified.len() as u64, expected_applied + expected_rejected);
            prop_assert!(out.notified.values().all(|kinds| kinds.len() == 1));
            // Each trade's decision is archived once, by the record that made it.
            for trades in built.trades.values() {
                for t in trades {
                    let want = match store.decision(&t.trade_id) {
                        Some(true) => ArchiveStatus::Applied,
                        _ => ArchiveStatus::Rejected,
                    };
                    prop_assert_eq!(
                        out.archived_decisions.get(&*t.trade_id).map(Vec::as_slice),
                        Some(&[want][..]),
                        "{}", t.trade_id
                    );
                }
            }
            // Conservation, from what was notified against what is stored:
            // cost_basis + Σ removed = Σ buy cost; realized = Σ proceeds − Σ removed.
            for user in built.trades.keys() {
                let p = store.portfolio(user).map(|s| s.portfolio).unwrap_or_else(|| Portfolio::new(""));
                let (bought, removed, realized) = out.flows.get(user).copied().unwrap_or_default();
                prop_assert_eq!(p.cost_basis_cop + removed, bought, "{}", user);
                prop_assert_eq!(p.realized_pnl_cop, realized, "{}", user);
            }
        }
    }

    /// The fast scanner and serde_json agree on every input: same trade or same reason.
    #[test]
    fn fast_and_serde_parsers_agree(line in trade_like_line()) {
        let fast = Trade::parse_for_tests(line.as_bytes(), true);
        let slow = Trade::parse_for_tests(line.as_bytes(), false);
        match (&fast, &slow) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.reason, b.reason, "{} / {}", a, b),
            _ => prop_assert!(false, "{:?} vs {:?} for {}", fast, slow, line),
        }
    }
}

proptest! {
    // Each case delivers the stream twice, with real (sub-millisecond) waits.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Concurrent commits under random store latencies, transient failures (retried in the
    /// batch or reported) and partial-batch retries end exactly where the sequential reference
    /// — one user after another, no latency, no failure — ends: the same portfolios, the same
    /// decision for every trade, the same archive; and without ambiguous failures the same
    /// counts and one notification per trade.
    #[test]
    fn concurrent_commits_match_the_sequential_reference(s in scenario(), m in mode()) {
        let built = build(&s)?;
        let clean = Scenario { faults: Vec::new(), ..s.clone() };
        let (reference, expected) = deliver_all(&clean, &built, &Mode::sequential())?;
        let (processor, out) = deliver_all(&s, &built, &m)?;
        let (want, got) = (reference.store(), processor.store());

        prop_assert_eq!(got.decided_count(), want.decided_count());
        for (user, trades) in &built.trades {
            for t in trades {
                prop_assert_eq!(got.decision(&t.trade_id), want.decision(&t.trade_id), "{}", t.trade_id);
            }
            let portfolio = |store: &MemoryPortfolioStore| {
                store.portfolio(user).map(|p| (money(&p.portfolio), p.portfolio.last_executed_at))
            };
            prop_assert_eq!(portfolio(got), portfolio(want), "{}", user);
        }
        prop_assert_eq!(&out.archived, &expected.archived);
        prop_assert!(got.counters().max_in_flight <= m.commit_concurrency as u64);

        let ambiguous = s
            .faults
            .iter()
            .any(|f| matches!(f, Fault::Commit(_, FailureMode::TransientAfterWrite)));
        if !ambiguous {
            prop_assert_eq!((out.applied, out.rejected), (expected.applied, expected.rejected));
            prop_assert_eq!(&out.notified, &expected.notified);
            prop_assert_eq!(&out.archived_decisions, &expected.archived_decisions);
        }
    }
}

/// Valid trade lines with one random edit: a mutated value, a removed or repeated field,
/// escapes, spaces, exotic numbers and times, truncation.
fn trade_like_line() -> impl Strategy<Value = String> {
    let base = r#"{"trade_id":"t-1","user_id":"u-1","side":"BUY","usd_amount":"250.10","rate":4012.35,"executed_at":"2026-11-28T17:00:00Z","channel":"app"}"#;
    let replacement = prop_oneof![
        Just(r#""t\u002d1""#.to_string()),
        Just("null".to_string()),
        Just("true".to_string()),
        Just("[1]".to_string()),
        Just(r#"{"a":1}"#.to_string()),
        Just("-0".to_string()),
        Just("01".to_string()),
        Just("1.".to_string()),
        Just("2.5e2".to_string()),
        Just("2.5E-1".to_string()),
        Just("1e400".to_string()),
        Just(r#""12.345""#.to_string()),
        Just(r#""0012.30""#.to_string()),
        Just(r#""2026-11-28t17:00:00z""#.to_string()),
        Just(r#""2026-11-28T17:00:60Z""#.to_string()),
        Just(r#""2026-02-30T17:00:00Z""#.to_string()),
        Just(r#""2026-11-28T17:00:00.123456789+05:30""#.to_string()),
        Just(r#""2026-11-28T17:00:00.1234567891Z""#.to_string()),
        Just(r#""2026-11-28T17:00:00-23:59""#.to_string()),
        Just(r#""2026-11-28 17:00:00Z""#.to_string()),
        "[0-9]{1,30}(\\.[0-9]{0,6})?",
        "\"[0-9 a-zA-Z_.:+-]{0,12}\"",
    ];
    let field = prop_oneof![
        Just("trade_id"),
        Just("user_id"),
        Just("side"),
        Just("usd_amount"),
        Just("rate"),
        Just("executed_at"),
        Just("channel"),
    ];
    (field, replacement, 0usize..6, any::<usize>()).prop_map(move |(field, value, edit, cut)| {
        let mut v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(base).unwrap_or_default();
        let text = |v: &serde_json::Map<String, serde_json::Value>| {
            serde_json::to_string(v).unwrap_or_default()
        };
        match edit {
            // Replace one value with raw text.
            0 | 1 => {
                let marker = "\"__VALUE__\"";
                v.insert(
                    field.to_string(),
                    serde_json::Value::String("__VALUE__".into()),
                );
                text(&v).replace(marker, &value)
            }
            // Remove a field.
            2 => {
                v.remove(field);
                text(&v)
            }
            // Repeat a field.
            3 => {
                let t = text(&v);
                format!("{},\"{field}\":{value}}}", &t[..t.len() - 1])
            }
            // Whitespace everywhere.
            4 => text(&v).replace(',', " ,\n\t").replace(':', " : "),
            // Truncate.
            _ => {
                let t = text(&v);
                let at = cut % t.len();
                t.char_indices()
                    .take_while(|(i, _)| *i < at)
                    .map(|(_, c)| c)
                    .collect()
            }
        }
    })
}

#[test]
fn build_keeps_each_users_order() -> Result<(), TestCaseError> {
    let s = Scenario {
        users: vec![
            vec![(true, 100, 40_000_000); 3],
            vec![(true, 100, 40_000_000); 2],
        ],
        picks: vec![1, 0, 1, 0, 0],
        redeliveries: vec![(0, 0)],
        batch_sizes: vec![2],
        faults: vec![],
        max_items: 100,
        lookup: true,
    };
    let built = build(&s)?;
    let ids: Vec<String> = built
        .lines
        .iter()
        .filter_map(|l| Trade::parse(l.as_bytes()).ok())
        .map(|t| t.trade_id.to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "user-1-t0",
            "user-1-t0",
            "user-0-t0",
            "user-1-t1",
            "user-0-t1",
            "user-0-t2"
        ]
    );
    Ok(())
}
