//! The handler with the in-memory adapters: the fixture event end to end, failures of the
//! store and of each output, and events no producer should send.

use std::io::Read;
use std::str::FromStr;

use anyhow::{anyhow, Context};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use flate2::read::GzDecoder;
use lago::trades::ports::BoxError;
use lago::trades::{
    Commit, CommitOutcome, FailureMode, Loaded, MemoryPortfolioStore, Notification, Notifier,
    PortfolioStore, RecordingArchive, RecordingDeadLetters, RecordingNotifier, RuleRecommender,
    SinkError, StoreError, TradeArchive, TradeProcessor,
};
use rust_decimal::Decimal;
use trades_stream::{KinesisTradeEvent, TradeStream};

const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../events/kinesis-trades.json"
));

/// Sequence numbers of the fixture's records, in order.
const SEQ: [&str; 10] = [
    "49656733331405069471539893837530498733542391530190258178",
    "49656733331405069471539893837530498733542391531264000002",
    "49656733331405069471539893837530498733542391532337741826",
    "49656733331405069471539893837530498733542391533411483650",
    "49656733331405069471539893837530498733542391534485225474",
    "49656733331405069471539893837530498733542391535558967298",
    "49656733331405069471539893837530498733542391536632709122",
    "49656733331405069471539893837530498733542391537706450946",
    "49656733331405069471539893837530498733542391538780192770",
    "49656733331405069471539893837530498733542391539853934594",
];

fn fixture() -> anyhow::Result<KinesisTradeEvent> {
    Ok(serde_json::from_str(FIXTURE)?)
}

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_795_971_700, 0).unwrap_or_default()
}

fn dec(s: &str) -> anyhow::Result<Decimal> {
    Ok(Decimal::from_str(s)?)
}

type MemoryStream<A = RecordingArchive, N = RecordingNotifier> =
    TradeStream<MemoryPortfolioStore, RuleRecommender, A, RecordingDeadLetters, N>;

fn memory_stream(store: MemoryPortfolioStore) -> MemoryStream {
    TradeStream::new(
        TradeProcessor::new(store),
        RecordingArchive::new(),
        RecordingDeadLetters::new(),
        RecordingNotifier::new(),
    )
}

/// (usd_balance, cost_basis_cop, realized_pnl_cop, trades_applied) as stored.
type Balances = (String, String, String, u64);

fn balances(store: &MemoryPortfolioStore, user: &str) -> Option<Balances> {
    store.portfolio(user).map(|s| {
        let p = s.portfolio;
        (
            p.usd_balance.to_string(),
            p.cost_basis_cop.to_string(),
            p.realized_pnl_cop.to_string(),
            p.trades_applied,
        )
    })
}

fn expected_balances() -> [(&'static str, Option<Balances>); 4] {
    let b = |u: &str, c: &str, r: &str, n| Some((u.to_string(), c.to_string(), r.to_string(), n));
    [
        ("user-0001", b("250.50", "1005643.15", "13545.65", 3)),
        ("user-0002", b("600.00", "2406072.00", "36152.00", 2)),
        ("user-0003", b("20.00", "80999.80", "0.00", 1)),
        ("user-0004", None),
    ]
}

#[tokio::test]
async fn the_fixture_event_settles_every_record() -> anyhow::Result<()> {
    // GIVEN the fixture: valid trades, a redelivered trade, a truncated record, an oversell,
    // an amount with three decimals
    let stream = memory_stream(MemoryPortfolioStore::without_decision_lookup());
    let event = fixture()?;

    // WHEN the handler runs it
    let (result, metrics) = stream.handle(&event, now()).await;
    let response = result?;

    // THEN nothing is left for Kinesis to re-send
    assert!(response.batch_item_failures.is_empty());
    // AND the portfolios are exact to the cent
    let store = stream.processor().store();
    for (user, expected) in expected_balances() {
        assert_eq!(balances(store, user), expected, "{user}");
    }
    let one = store.portfolio("user-0001").context("user-0001")?.portfolio;
    assert_eq!(one.last_trade_id.as_deref(), Some("trd-20261128-000008"));
    assert_eq!(one.last_rate, Some(dec("4150.0000")?));
    assert_eq!(one.average_cost(), Some(dec("4014.5435")?));
    assert!(one.recommendation.is_some());
    assert_eq!(one.updated_at, Some(now()));

    // AND the metrics count each record once
    let emf: serde_json::Value = serde_json::from_str(&metrics.to_json(0))?;
    assert_eq!(emf["Records"], 10);
    assert_eq!(emf["Applied"], 6);
    assert_eq!(emf["Duplicates"], 1);
    assert_eq!(emf["Rejected"], 3);
    assert_eq!(emf["DeadLetters"], 3);
    assert_eq!(emf["Function"], "trades-stream");
    assert_eq!(emf["shard_id"], "shardId-000000000000");
    Ok(())
}

#[tokio::test]
async fn the_fixture_outputs_reach_each_port() -> anyhow::Result<()> {
    let stream = memory_stream(MemoryPortfolioStore::new());
    let (result, _) = stream.handle(&fixture()?, now()).await;
    result?;

    // dead letters: reason, sequence number and the original data
    let letters = stream_letters(&stream);
    let got: Vec<(&str, &str)> = letters
        .iter()
        .map(|l| (l.reason.as_str(), l.sequence_number.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("invalid_json", SEQ[4]),
            ("invalid_field:usd_amount", SEQ[8]),
            ("insufficient_balance", SEQ[6]),
        ]
    );
    assert!(letters.iter().all(|l| l.shard_id == "shardId-000000000000"));
    let truncated = base64::engine::general_purpose::STANDARD.decode(&letters[0].data)?;
    assert!(truncated.starts_with(br#"{"trade_id": "trd-20261128-000005""#));
    assert_eq!(letters[2].user_id.as_deref(), Some("user-0003"));

    // notifications: 6 confirmed, 1 rejected, with the attributes filters match on
    let notes = stream_notes(&stream);
    let kinds: Vec<&str> = notes.iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "TradeConfirmed").count(), 6);
    assert_eq!(kinds.iter().filter(|k| **k == "TradeRejected").count(), 1);
    let rejected = notes
        .iter()
        .find(|n| n.kind.as_str() == "TradeRejected")
        .context("a rejection")?;
    assert_eq!(
        rejected.attributes(),
        [("user_id", "user-0003"), ("side", "SELL")]
    );

    // archive: one object, named by the batch, one line per valid record with its decision
    let objects = stream_objects(&stream);
    let (key, body) = objects.iter().next().context("an archive object")?;
    let named = format!(
        "raw/trades/year=2026/month=11/day=28/shardId-000000000000-{}-{}-",
        SEQ[0], SEQ[9]
    );
    assert!(
        key.starts_with(&named) && key.ends_with(".ndjson.gz"),
        "{key}"
    );
    let mut text = String::new();
    GzDecoder::new(&body[..]).read_to_string(&mut text)?;
    assert!(text.contains(r#""usd_amount":"1000.00","rate":"4010.1200""#));
    // each line says what became of its record, and when the record reached the stream
    let lines = text
        .lines()
        .map(serde_json::from_str::<serde_json::Value>)
        .collect::<Result<Vec<_>, _>>()?;
    let decisions: Vec<(&str, &str, &str, &str)> = lines
        .iter()
        .map(|l| {
            let field = |f: &str| l[f].as_str().unwrap_or("<missing>");
            (
                field("sequence_number"),
                field("status"),
                field("reason"),
                field("arrived_at"),
            )
        })
        .collect();
    let applied = |i: usize, at: &'static str| (SEQ[i], "applied", "", at);
    assert_eq!(
        decisions,
        [
            applied(0, "2026-11-28T17:00:00.125Z"),
            applied(1, "2026-11-28T17:00:00.375Z"),
            applied(2, "2026-11-28T17:00:00.625Z"),
            (SEQ[3], "duplicate", "", "2026-11-28T17:00:00.875Z"),
            applied(5, "2026-11-28T17:00:01.375Z"),
            (
                SEQ[6],
                "rejected",
                "insufficient_balance",
                "2026-11-28T17:00:01.625Z"
            ),
            applied(7, "2026-11-28T17:00:01.875Z"),
            applied(9, "2026-11-28T17:00:02.375Z"),
        ]
    );
    Ok(())
}

fn stream_letters(stream: &MemoryStream) -> Vec<lago::trades::DeadLetter> {
    stream_parts(stream).1.letters()
}

fn stream_notes(stream: &MemoryStream) -> Vec<Notification> {
    stream_parts(stream).2.notifications()
}

fn stream_objects(stream: &MemoryStream) -> std::collections::BTreeMap<String, Vec<u8>> {
    stream_parts(stream).0.objects()
}

fn stream_parts(
    stream: &MemoryStream,
) -> (&RecordingArchive, &RecordingDeadLetters, &RecordingNotifier) {
    stream.outputs()
}

#[tokio::test]
async fn a_throttled_commit_fails_at_the_first_record_not_applied() -> anyhow::Result<()> {
    // GIVEN the store throttles the second transaction (user-0002's)
    let store = MemoryPortfolioStore::without_decision_lookup();
    store.fail_commit(2, FailureMode::Transient);
    let stream = memory_stream(store);
    let event = fixture()?;

    // WHEN the batch runs
    let (result, metrics) = stream.handle(&event, now()).await;
    let response = result?;

    // THEN Kinesis is told to re-send from user-0002's first record
    let failures: Vec<Option<&str>> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_deref())
        .collect();
    assert_eq!(failures, [Some(SEQ[1])]);
    let emf: serde_json::Value = serde_json::from_str(&metrics.to_json(0))?;
    assert_eq!(emf["batch_item_failure"], SEQ[1]);

    // WHEN Kinesis re-sends the batch from there
    let mut retry = event.clone();
    retry.records.drain(..1);
    let (result, _) = stream.handle(&retry, now()).await;
    assert!(result?.batch_item_failures.is_empty());

    // THEN the state is the one of a run that never failed
    for (user, expected) in expected_balances() {
        assert_eq!(
            balances(stream.processor().store(), user),
            expected,
            "{user}"
        );
    }
    Ok(())
}

/// A store whose every call is refused for good (a missing table, no permission).
struct BrokenStore;

#[derive(Debug, thiserror::Error)]
#[error("ResourceNotFoundException: table lago-portfolios not found")]
struct NoTable;

impl PortfolioStore for BrokenStore {
    async fn load(&self, _: &[&str], _: &[&str]) -> Result<Loaded, StoreError> {
        let cause: BoxError = Box::new(NoTable);
        Err(StoreError::Permanent(cause))
    }

    async fn commit(&self, _: &Commit<'_>) -> Result<CommitOutcome, StoreError> {
        let cause: BoxError = Box::new(NoTable);
        Err(StoreError::Permanent(cause))
    }
}

#[tokio::test]
async fn a_permanent_store_failure_fails_the_invocation() -> anyhow::Result<()> {
    let stream = TradeStream::new(
        TradeProcessor::new(BrokenStore),
        RecordingArchive::new(),
        RecordingDeadLetters::new(),
        RecordingNotifier::new(),
    );
    let (result, _) = stream.handle(&fixture()?, now()).await;
    let err = result.err().context("the invocation fails")?;
    let diagnostic = lago::runtime::diagnostic(err);
    assert_eq!(diagnostic.error_type, "StoreFailure");
    assert!(
        diagnostic
            .error_message
            .contains("table lago-portfolios not found"),
        "{}",
        diagnostic.error_message
    );
    Ok(())
}

/// An output that is down.
struct Down;

fn down() -> SinkError {
    let cause: BoxError = "503 Service Unavailable".into();
    SinkError::Transient(cause)
}

impl TradeArchive for Down {
    async fn put(&self, _: &str, _: &[u8]) -> Result<(), SinkError> {
        Err(down())
    }
}

impl Notifier for Down {
    async fn publish(&self, _: &[Notification]) -> Result<(), SinkError> {
        Err(down())
    }
}

#[tokio::test]
async fn an_archive_failure_fails_the_invocation_to_be_retried() -> anyhow::Result<()> {
    let stream = TradeStream::new(
        TradeProcessor::new(MemoryPortfolioStore::new()),
        Down,
        RecordingDeadLetters::new(),
        RecordingNotifier::new(),
    );
    let (result, _) = stream.handle(&fixture()?, now()).await;
    let diagnostic = lago::runtime::diagnostic(result.err().context("the invocation fails")?);
    assert_eq!(diagnostic.error_type, "Retryable");
    // the portfolios were committed all the same: the retry finds duplicates
    let (result, metrics) = stream.handle(&fixture()?, now()).await;
    assert!(result.is_err());
    let emf: serde_json::Value = serde_json::from_str(&metrics.to_json(0))?;
    assert_eq!(
        (emf["Applied"].as_u64(), emf["Duplicates"].as_u64()),
        (Some(0), Some(8))
    );
    Ok(())
}

#[tokio::test]
async fn a_notifier_failure_is_logged_not_retried() -> anyhow::Result<()> {
    // GIVEN SNS is down
    let stream = TradeStream::new(
        TradeProcessor::new(MemoryPortfolioStore::new()),
        RecordingArchive::new(),
        RecordingDeadLetters::new(),
        Down,
    );
    // WHEN a batch runs
    let (result, metrics) = stream.handle(&fixture()?, now()).await;
    // THEN the batch succeeds (a retry could not re-send them) and the loss is counted
    assert!(result?.batch_item_failures.is_empty());
    let emf: serde_json::Value = serde_json::from_str(&metrics.to_json(0))?;
    assert_eq!(emf["Undelivered"], 7);
    Ok(())
}

#[tokio::test]
async fn any_event_shape_is_settled_without_a_panic() -> anyhow::Result<()> {
    let event: KinesisTradeEvent = serde_json::from_str(
        r#"{"Records": [
            {"eventID": "shardId-000000000001:1", "kinesis": {"sequenceNumber": "1", "data": "%%%"}},
            {"eventID": "shardId-000000000001:2", "kinesis": {"sequenceNumber": "2", "data": ""}},
            {"eventID": "shardId-000000000001:3", "kinesis": {"sequenceNumber": "3", "data": "//79"}},
            {"eventID": "shardId-000000000001:4", "kinesis": {"sequenceNumber": "4", "data": "WzFd"}},
            {"kinesis": {}},
            {}
        ], "unexpected": true}"#,
    )?;
    let stream = memory_stream(MemoryPortfolioStore::new());
    let (result, metrics) = stream.handle(&event, now()).await;
    assert!(result?.batch_item_failures.is_empty());
    let reasons: Vec<String> = stream_letters(&stream)
        .into_iter()
        .map(|l| l.reason)
        .collect();
    assert_eq!(
        reasons,
        [
            "invalid_base64",
            "invalid_json",
            "invalid_encoding",
            "invalid_json",
            "invalid_json",
            "invalid_json"
        ]
    );
    let emf: serde_json::Value = serde_json::from_str(&metrics.to_json(0))?;
    assert_eq!(emf["Rejected"], 6);
    Ok(())
}

#[tokio::test]
async fn an_empty_event_is_a_no_op() -> anyhow::Result<()> {
    let stream = memory_stream(MemoryPortfolioStore::new());
    let (result, _) = stream.handle(&KinesisTradeEvent::default(), now()).await;
    assert!(result?.batch_item_failures.is_empty());
    assert!(stream_objects(&stream).is_empty());
    Ok(())
}

#[test]
fn the_fixture_is_a_real_kinesis_event() -> anyhow::Result<()> {
    // The SDK's own event type reads it too, data and all.
    let official: aws_lambda_events::kinesis::KinesisEvent = serde_json::from_str(FIXTURE)?;
    assert_eq!(official.records.len(), 10);
    let first = &official.records[0];
    assert_eq!(first.kinesis.sequence_number, SEQ[0]);
    assert_eq!(first.kinesis.partition_key, "user-0001");
    let data =
        String::from_utf8(first.kinesis.data.0.clone()).map_err(|e| anyhow!("not UTF-8: {e}"))?;
    assert!(data.contains("trd-20261128-000001"));
    Ok(())
}

/// The fixture's ten records packed by the KPL format into two aggregated records (five user
/// records each), with the first and the sixth record's sequence numbers.
fn fixture_aggregated() -> anyhow::Result<KinesisTradeEvent> {
    Ok(fixture()?.aggregated(5))
}

#[tokio::test]
async fn kpl_aggregated_records_settle_as_the_same_records_sent_alone() -> anyhow::Result<()> {
    // GIVEN the fixture's records as two KPL aggregates
    let stream = memory_stream(MemoryPortfolioStore::without_decision_lookup());
    let event = fixture_aggregated()?;

    // WHEN the handler runs it
    let (result, metrics) = stream.handle(&event, now()).await;
    assert!(result?.batch_item_failures.is_empty());

    // THEN the portfolios and counts are the fixture's
    for (user, expected) in expected_balances() {
        assert_eq!(
            balances(stream.processor().store(), user),
            expected,
            "{user}"
        );
    }
    let emf: serde_json::Value = serde_json::from_str(&metrics.to_json(0))?;
    assert_eq!(
        (emf["Records"].as_u64(), emf["Applied"].as_u64()),
        (Some(10), Some(6))
    );
    // AND each dead letter names its aggregate's sequence number and its sub-sequence number
    let letters: Vec<(String, String, Option<u32>)> = stream_letters(&stream)
        .into_iter()
        .map(|l| (l.reason, l.sequence_number, l.sub_sequence_number))
        .collect();
    assert_eq!(
        letters,
        [
            ("invalid_json".to_string(), SEQ[0].to_string(), Some(4)),
            (
                "invalid_field:usd_amount".to_string(),
                SEQ[5].to_string(),
                Some(3)
            ),
            (
                "insufficient_balance".to_string(),
                SEQ[5].to_string(),
                Some(1)
            ),
        ]
    );
    // AND so does every archive line
    let objects = stream_objects(&stream);
    let (_, body) = objects.iter().next().context("an archive object")?;
    let mut text = String::new();
    GzDecoder::new(&body[..]).read_to_string(&mut text)?;
    let subs: Vec<(String, u64)> = text
        .lines()
        .map(serde_json::from_str::<serde_json::Value>)
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .map(|l| {
            (
                l["sequence_number"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                l["sub_sequence_number"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = [
        (0, 0),
        (0, 1),
        (0, 2),
        (0, 3),
        (5, 0),
        (5, 1),
        (5, 2),
        (5, 4),
    ]
    .iter()
    .map(|(seq, sub)| (SEQ[*seq].to_string(), *sub))
    .collect();
    assert_eq!(subs, expected);
    Ok(())
}

#[tokio::test]
async fn a_failure_inside_an_aggregate_resends_the_whole_aggregate() -> anyhow::Result<()> {
    // GIVEN the store throttles the second transaction (user-0002's, in the first aggregate)
    let store = MemoryPortfolioStore::without_decision_lookup();
    store.fail_commit(2, FailureMode::Transient);
    let stream = memory_stream(store);
    let event = fixture_aggregated()?;

    // WHEN the batch runs THEN Kinesis is told to re-send from the first aggregate (the only
    // sequence number a partial batch response can name)
    let (result, _) = stream.handle(&event, now()).await;
    let failures: Vec<Option<String>> = result?
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failures, [Some(SEQ[0].to_string())]);

    // WHEN Kinesis re-sends it THEN what was committed comes back as duplicates, and the state
    // is that of a run that never failed
    let (result, metrics) = stream.handle(&event, now()).await;
    assert!(result?.batch_item_failures.is_empty());
    let emf: serde_json::Value = serde_json::from_str(&metrics.to_json(0))?;
    assert!(emf["Duplicates"].as_u64().unwrap_or(0) >= 1, "{emf}");
    for (user, expected) in expected_balances() {
        assert_eq!(
            balances(stream.processor().store(), user),
            expected,
            "{user}"
        );
    }
    Ok(())
}

/// A shard in memory holding the fixture's records from `from` on: what Kinesis still has after
/// trimming the older ones.
struct FixtureShard {
    from: usize,
}

impl lago::redrive::ShardReader for FixtureShard {
    async fn read(
        &self,
        batch: &lago::redrive::StreamBatch,
    ) -> Result<lago::redrive::ShardRange, lago::redrive::StreamError> {
        use lago::redrive::sequence_cmp;
        let event = fixture().map_err(|e| lago::redrive::StreamError {
            operation: "GetRecords",
            shard_id: batch.shard_id.clone(),
            transient: false,
            source: e.into(),
        })?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let held = &event.records[self.from..];
        Ok(lago::redrive::ShardRange {
            trimmed: sequence_cmp(
                &held[0].kinesis.sequence_number,
                &batch.start_sequence_number,
            )
            .is_gt(),
            records: held
                .iter()
                .filter(|r| {
                    let seq = &r.kinesis.sequence_number;
                    sequence_cmp(seq, &batch.start_sequence_number).is_ge()
                        && sequence_cmp(seq, &batch.end_sequence_number).is_le()
                })
                .map(|r| lago::redrive::ShardRecord {
                    sequence_number: r.kinesis.sequence_number.clone(),
                    partition_key: r.kinesis.partition_key.clone(),
                    data: b64.decode(&r.kinesis.data).unwrap_or_default(),
                    arrived_at: r.kinesis.arrived_at(),
                })
                .collect(),
        })
    }
}

fn failure_record(start: usize, end: usize) -> String {
    serde_json::json!({
        "requestContext": {"condition": "RetryAttemptsExhausted"},
        "KinesisBatchInfo": {
            "shardId": "shardId-000000000000",
            "startSequenceNumber": SEQ[start],
            "endSequenceNumber": SEQ[end],
            "approximateArrivalOfFirstRecord": "2026-11-28T17:00:00Z",
            "batchSize": end - start + 1,
            "streamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/lago-dev-trades"
        }
    })
    .to_string()
}

async fn redrive_fixture(
    stream: &MemoryStream,
    shard: FixtureShard,
    body: String,
) -> anyhow::Result<(serde_json::Value, lago::redrive::MemoryQueue)> {
    let redriver = trades_stream::Redriver {
        queue: lago::redrive::MemoryQueue::default(),
        reader: shard,
        retention_hours: 168,
    };
    redriver.queue.send(body);
    let sample: trades_stream::Invocation = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/trades-stream-redrive.json"
    )))?;
    assert_eq!(sample.dry_run, Some(true));
    let invocation = trades_stream::Invocation {
        dry_run: Some(false),
        ..sample
    };
    let answer = stream
        .invoke(
            lambda_runtime::LambdaEvent::new(invocation, lambda_runtime::Context::default()),
            Some(&redriver),
        )
        .await?;
    Ok((serde_json::to_value(answer)?, redriver.queue))
}

#[tokio::test]
async fn a_redriven_range_is_applied_as_the_same_records_delivered_then_all_duplicates(
) -> anyhow::Result<()> {
    // GIVEN the event source gave up on the fixture's records 2–6
    let stream = memory_stream(MemoryPortfolioStore::new());
    // WHEN the range is redriven from the shard
    let (report, queue) =
        redrive_fixture(&stream, FixtureShard { from: 0 }, failure_record(2, 6)).await?;
    // THEN exactly those 5 records ran, as one delivered batch of them would, and the message
    // is gone
    assert_eq!(
        (report["redriven"].as_u64(), report["items"].as_u64()),
        (Some(1), Some(5)),
        "{report}"
    );
    assert!(queue.bodies().is_empty());
    let twin = memory_stream(MemoryPortfolioStore::new());
    let mut delivered = fixture()?;
    delivered.records = delivered.records[2..=6].to_vec();
    let (result, _) = twin.handle(&delivered, now()).await;
    result?;
    assert!(balances(stream.processor().store(), "user-0001").is_some());
    for (user, _) in expected_balances() {
        assert_eq!(
            balances(stream.processor().store(), user),
            balances(twin.processor().store(), user),
            "{user}"
        );
    }
    // AND a second redrive of the same range changes nothing: every trade is a duplicate
    let (again, _) =
        redrive_fixture(&stream, FixtureShard { from: 0 }, failure_record(2, 6)).await?;
    assert_eq!(again["redriven"], 1, "{again}");
    let (_, _, counts) = twin.handle_counted(&delivered, now(), None).await;
    assert_eq!(
        again["items_already_done"].as_u64(),
        Some(counts.duplicates),
        "{again}"
    );
    Ok(())
}

#[tokio::test]
async fn a_range_partly_aged_out_applies_what_is_left_and_stays_on_the_queue_as_expired(
) -> anyhow::Result<()> {
    // GIVEN the stream no longer holds records 2 and 3 of the failed range 2–6
    let stream = memory_stream(MemoryPortfolioStore::new());
    let (report, queue) =
        redrive_fixture(&stream, FixtureShard { from: 4 }, failure_record(2, 6)).await?;
    // THEN records 4–6 run, the message stays, and the report names where the loss ends
    assert_eq!(
        (report["expired"].as_u64(), report["items"].as_u64()),
        (Some(1), Some(3)),
        "{report}"
    );
    let detail = report["details"][0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("are lost") && detail.contains(SEQ[4]),
        "{detail}"
    );
    assert_eq!(queue.bodies().len(), 1);
    assert_eq!(queue.hidden(), 0);
    Ok(())
}

#[tokio::test]
async fn a_redrive_needs_its_queue_and_an_unknown_action_is_refused() -> anyhow::Result<()> {
    let stream = memory_stream(MemoryPortfolioStore::new());
    for (payload, expected) in [
        (r#"{"action": "redrive"}"#, "STREAM_FAILURE_QUEUE_URL"),
        (r#"{"action": "replay"}"#, "unknown action"),
        (
            r#"{"action": "redrive", "max_messages": 0}"#,
            "max_messages",
        ),
    ] {
        let invocation: trades_stream::Invocation = serde_json::from_str(payload)?;
        let err = stream
            .invoke(
                lambda_runtime::LambdaEvent::new(invocation, lambda_runtime::Context::default()),
                None::<&trades_stream::Redriver<lago::redrive::MemoryQueue, FixtureShard>>,
            )
            .await
            .expect_err(payload);
        assert_eq!(err.error_type(), "InvalidInput", "{payload}");
        assert!(err.to_string().contains(expected), "{payload}: {err}");
    }
    Ok(())
}
