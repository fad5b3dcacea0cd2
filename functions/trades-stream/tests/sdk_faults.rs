//! The AWS adapters on SDK clients answered by `aws-smithy-mocks`: throttling in the middle of a
//! batch (retried by the SDK, then reported as `batchItemFailures`), a cancelled transaction
//! that says which trades were already decided, throttling that outlasts the SDK's retries
//! retried by the processor within the deadline, unprocessed keys, failed batch entries, and a
//! model endpoint that fails.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput;
use aws_sdk_dynamodb::operation::transact_write_items::{
    TransactWriteItemsError, TransactWriteItemsInput, TransactWriteItemsOutput,
};
use aws_sdk_dynamodb::types::error::TransactionCanceledException;
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason, KeysAndAttributes};
use aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointOutput;
use aws_sdk_sagemakerruntime::primitives::Blob;
use aws_sdk_sns::operation::publish_batch::{PublishBatchInput, PublishBatchOutput};
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::BatchResultErrorEntry;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use lago::aws::trades::{
    DynamoDbPortfolioStore, SageMakerRecommender, SnsNotifier, SqsDeadLetterSink,
};
use lago::trades::{
    DataEncoding, DeadLetter, DeadLetterSink, Notifier, ProcessorConfig, RecommendationSource,
    RecordingArchive, RecordingDeadLetters, RecordingNotifier, RetryPolicy, RuleRecommender,
    TradeProcessor, WithRuleFallback,
};
use rust_decimal::Decimal;
use trades_stream::{KinesisTradeEvent, TradeStream};

type Item = HashMap<String, AttributeValue>;
type Captured<T> = Arc<Mutex<Vec<T>>>;

const PORTFOLIOS: &str = "portfolios";
const DECISIONS: &str = "decisions";

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_795_971_700, 0).unwrap_or_default()
}

fn trade(id: &str, user: &str, side: &str, usd: &str, rate: &str) -> String {
    format!(
        r#"{{"trade_id":"{id}","user_id":"{user}","side":"{side}","usd_amount":"{usd}","rate":"{rate}","executed_at":"2026-11-28T17:00:00Z"}}"#
    )
}

/// A Kinesis event of `lines` on shard 0, sequence numbers `first`, `first + 1`, …
fn event(first: u64, lines: &[String]) -> anyhow::Result<KinesisTradeEvent> {
    let records: Vec<serde_json::Value> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let seq = format!("{:056}", first + i as u64);
            serde_json::json!({
                "eventID": format!("shardId-000000000000:{seq}"),
                "kinesis": {
                    "sequenceNumber": seq,
                    "data": base64::engine::general_purpose::STANDARD.encode(line),
                },
            })
        })
        .collect();
    Ok(serde_json::from_value(
        serde_json::json!({ "Records": records }),
    )?)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn throttling() -> String {
    r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#.to_string()
}

fn committed() -> TransactWriteItemsOutput {
    TransactWriteItemsOutput::builder().build()
}

fn found(items: Vec<Item>) -> BatchGetItemOutput {
    BatchGetItemOutput::builder()
        .responses(PORTFOLIOS, items)
        .build()
}

/// The portfolio put of a transaction (its last item).
fn portfolio_put(input: &TransactWriteItemsInput) -> Option<Item> {
    input
        .transact_items()
        .last()
        .and_then(|i| i.put())
        .map(|p| p.item().clone())
}

/// The decision puts of a transaction, by trade id.
fn decision_puts(input: &TransactWriteItemsInput) -> Vec<(String, Item)> {
    input
        .transact_items()
        .iter()
        .filter_map(|i| i.put())
        .filter(|p| p.table_name() == DECISIONS)
        .filter_map(|p| match p.item().get("trade_id") {
            Some(AttributeValue::S(id)) => Some((id.clone(), p.item().clone())),
            _ => None,
        })
        .collect()
}

fn user_of(item: &Item) -> String {
    match item.get("user_id") {
        Some(AttributeValue::S(u)) => u.clone(),
        _ => String::new(),
    }
}

/// A transaction rule that records each request (once per call, not per attempt) and answers
/// with `responses`.
fn transactions(
    captured: &Captured<TransactWriteItemsInput>,
) -> aws_smithy_mocks::RuleBuilder<
    TransactWriteItemsInput,
    TransactWriteItemsOutput,
    TransactWriteItemsError,
> {
    let captured = Arc::clone(captured);
    mock!(aws_sdk_dynamodb::Client::transact_write_items).match_requests(move |input| {
        lock(&captured).push(input.clone());
        true
    })
}

fn dynamodb(rules: &[&Rule]) -> aws_sdk_dynamodb::Client {
    mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules, |b| {
        // The function's retry policy, with millisecond back-off to keep the test quick.
        b.retry_config(lago::aws::retry_config().with_initial_backoff(Duration::from_millis(1)))
    })
}

type MockedStream = TradeStream<
    DynamoDbPortfolioStore,
    RuleRecommender,
    RecordingArchive,
    RecordingDeadLetters,
    RecordingNotifier,
>;

fn mocked_stream(client: aws_sdk_dynamodb::Client) -> MockedStream {
    let store = DynamoDbPortfolioStore::new(client, PORTFOLIOS, DECISIONS)
        .with_unprocessed_retry(3, Duration::from_millis(1));
    TradeStream::new(
        TradeProcessor::new(store),
        RecordingArchive::new(),
        RecordingDeadLetters::new(),
        RecordingNotifier::new(),
    )
}

/// What the committed transactions leave in the tables: the last portfolio put per user and
/// every decision put.
fn final_state(
    committed: &[&TransactWriteItemsInput],
) -> (HashMap<String, Item>, HashMap<String, Item>) {
    let mut portfolios = HashMap::new();
    let mut decisions = HashMap::new();
    for input in committed {
        if let Some(item) = portfolio_put(input) {
            portfolios.insert(user_of(&item), item);
        }
        decisions.extend(decision_puts(input));
    }
    (portfolios, decisions)
}

fn interleaved() -> Vec<String> {
    vec![
        trade("a1", "ana", "BUY", "10", "4000"), // 1
        trade("b1", "bo", "BUY", "10", "4000"),  // 2
        trade("a2", "ana", "SELL", "5", "4100"), // 3
        "garbage".to_string(),                   // 4
        trade("c1", "cy", "BUY", "1", "4000"),   // 5
        trade("b2", "bo", "SELL", "5", "4200"),  // 6
    ]
}

#[tokio::test]
async fn throttling_mid_batch_reports_the_first_record_not_applied() -> anyhow::Result<()> {
    let lines = interleaved();
    let batch = event(1, &lines)?;

    // GIVEN DynamoDB commits ana, then throttles bo's transaction on every SDK attempt;
    // after Kinesis re-sends, bo commits, ana's re-sent trade is refused as decided, cy commits
    let captured: Captured<TransactWriteItemsInput> = Arc::default();
    let after_first = Arc::clone(&captured);
    let ana_stored = move || {
        let item = lock(&after_first).first().and_then(portfolio_put);
        found(item.into_iter().collect())
    };
    let reads = mock!(aws_sdk_dynamodb::Client::batch_get_item)
        .sequence()
        .output(|| found(vec![]))
        .output(ana_stored)
        .times(2)
        .build();
    let writes = transactions(&captured)
        .sequence()
        .output(committed)
        .http_status(400, Some(throttling()))
        .times(lago::aws::MAX_ATTEMPTS as usize)
        .output(committed)
        .error(|| {
            TransactWriteItemsError::TransactionCanceledException(
                TransactionCanceledException::builder()
                    .message("Transaction cancelled")
                    .cancellation_reasons(
                        CancellationReason::builder()
                            .code("ConditionalCheckFailed")
                            .item("trade_id", AttributeValue::S("a2".into()))
                            .build(),
                    )
                    .cancellation_reasons(CancellationReason::builder().code("None").build())
                    .build(),
            )
        })
        .output(committed)
        .build();
    let stream = mocked_stream(dynamodb(&[&reads, &writes]));

    // WHEN the batch runs
    let (result, _) = stream.handle(&batch, now()).await;
    let response = result?;

    // THEN the SDK retried bo's transaction, then the batch reported bo's first record
    assert_eq!(writes.num_calls(), 1 + lago::aws::MAX_ATTEMPTS as usize);
    let failures: Vec<Option<String>> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failures, [Some(format!("{:056}", 2))]);

    // WHEN Kinesis re-sends from that record
    let retry = event(2, &lines[1..])?;
    let (result, metrics) = stream.handle(&retry, now()).await;
    assert!(result?.batch_item_failures.is_empty());
    let emf: serde_json::Value = serde_json::from_str(&metrics.to_json(0))?;
    assert_eq!(
        (
            emf["Applied"].as_u64(),
            emf["Duplicates"].as_u64(),
            emf["Conflicts"].as_u64()
        ),
        (Some(3), Some(1), Some(1))
    );
    assert!(writes.is_exhausted() && reads.is_exhausted());

    // THEN the tables hold what an unfailed run writes
    let calls = lock(&captured).clone();
    // calls: ana ✓, bo ✗ (throttled), bo ✓, ana ✗ (cancelled), cy ✓
    assert_eq!(calls.len(), 5);
    let failing_run = final_state(&[&calls[0], &calls[2], &calls[4]]);

    let clean_captured: Captured<TransactWriteItemsInput> = Arc::default();
    let reads = mock!(aws_sdk_dynamodb::Client::batch_get_item).then_output(|| found(vec![]));
    let writes = transactions(&clean_captured).then_output(committed);
    let clean = mocked_stream(dynamodb(&[&reads, &writes]));
    let (result, _) = clean.handle(&batch, now()).await;
    assert!(result?.batch_item_failures.is_empty());
    let clean_calls = lock(&clean_captured).clone();
    let clean_run = final_state(&clean_calls.iter().collect::<Vec<_>>());

    assert_eq!(failing_run.0.len(), 3);
    assert_eq!(failing_run.1.len(), 5);
    assert_eq!(failing_run, clean_run);
    Ok(())
}

#[tokio::test]
async fn throttling_that_outlasts_the_sdk_is_retried_within_the_deadline() -> anyhow::Result<()> {
    let lines = interleaved();
    let batch = event(1, &lines)?;

    // GIVEN DynamoDB throttles bo's transaction on every SDK attempt once, and a transaction
    // conflict cancels the next one, then commits
    let captured: Captured<TransactWriteItemsInput> = Arc::default();
    let reads = mock!(aws_sdk_dynamodb::Client::batch_get_item)
        .sequence()
        .output(|| found(vec![]))
        .times(2)
        .build();
    let writes = transactions(&captured)
        .sequence()
        .output(committed)
        .http_status(400, Some(throttling()))
        .times(lago::aws::MAX_ATTEMPTS as usize)
        .error(|| {
            TransactWriteItemsError::TransactionCanceledException(
                TransactionCanceledException::builder()
                    .message("Transaction cancelled")
                    .cancellation_reasons(CancellationReason::builder().code("None").build())
                    .cancellation_reasons(
                        CancellationReason::builder()
                            .code("TransactionConflict")
                            .build(),
                    )
                    .build(),
            )
        })
        .output(committed)
        .times(2)
        .build();
    let store = DynamoDbPortfolioStore::new(dynamodb(&[&reads, &writes]), PORTFOLIOS, DECISIONS);
    let config = ProcessorConfig {
        retry: RetryPolicy {
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
        },
        ..ProcessorConfig::default()
    };
    let stream = TradeStream::new(
        TradeProcessor::new(store).with_config(config),
        RecordingArchive::new(),
        RecordingDeadLetters::new(),
        RecordingNotifier::new(),
    );

    // WHEN the batch runs with time to spare
    let deadline = Instant::now() + Duration::from_secs(60);
    let (result, metrics) = stream.handle_within(&batch, now(), Some(deadline)).await;

    // THEN the processor retried bo after the SDK gave up, redid it after the conflict, and
    // the batch settled whole: nothing handed back to Kinesis
    assert!(result?.batch_item_failures.is_empty());
    let emf: serde_json::Value = serde_json::from_str(&metrics.to_json(0))?;
    assert_eq!(
        (
            emf["Applied"].as_u64(),
            emf["Retried"].as_u64(),
            emf["Conflicts"].as_u64()
        ),
        (Some(5), Some(0), Some(1))
    );
    assert!(writes.is_exhausted() && reads.is_exhausted());
    // ana, bo (throttled), bo again (conflict), bo redone, cy
    let users: Vec<String> = lock(&captured)
        .iter()
        .filter_map(portfolio_put)
        .map(|item| user_of(&item))
        .collect();
    assert_eq!(users, ["ana", "bo", "bo", "bo", "cy"]);
    Ok(())
}

#[tokio::test]
async fn a_cancelled_transaction_names_the_trades_already_decided() -> anyhow::Result<()> {
    // GIVEN ana's portfolio already holds t1 (version 1), and t1 is re-sent with a new t2
    let mut stored: Item = HashMap::new();
    for (k, v) in [
        ("user_id", AttributeValue::S("ana".into())),
        ("version", AttributeValue::N("1".into())),
        // as DynamoDB returns numbers: normalized
        ("usd_balance", AttributeValue::N("100".into())),
        ("cost_basis_cop", AttributeValue::N("400000".into())),
        ("realized_pnl_cop", AttributeValue::N("0".into())),
        ("trades_applied", AttributeValue::N("1".into())),
        ("last_trade_id", AttributeValue::S("t1".into())),
    ] {
        stored.insert(k.to_string(), v);
    }
    let reads = mock!(aws_sdk_dynamodb::Client::batch_get_item)
        .then_output(move || found(vec![stored.clone()]));
    let captured: Captured<TransactWriteItemsInput> = Arc::default();
    let writes = transactions(&captured)
        .sequence()
        .error(|| {
            let reason = |code: &str| CancellationReason::builder().code(code).build();
            TransactWriteItemsError::TransactionCanceledException(
                TransactionCanceledException::builder()
                    .cancellation_reasons(
                        CancellationReason::builder()
                            .code("ConditionalCheckFailed")
                            .item("trade_id", AttributeValue::S("t1".into()))
                            .item("outcome", AttributeValue::S("APPLIED".into()))
                            .build(),
                    )
                    .cancellation_reasons(reason("None"))
                    .cancellation_reasons(reason("None"))
                    .build(),
            )
        })
        .output(committed)
        .build();
    let stream = mocked_stream(dynamodb(&[&reads, &writes]));
    let batch = event(
        10,
        &[
            trade("t1", "ana", "BUY", "100", "4000"),
            trade("t2", "ana", "BUY", "1", "4000"),
        ],
    )?;

    // WHEN the batch runs
    let (result, metrics) = stream.handle(&batch, now()).await;

    // THEN t1 is a duplicate, t2 is applied on top of the stored portfolio
    assert!(result?.batch_item_failures.is_empty());
    let emf: serde_json::Value = serde_json::from_str(&metrics.to_json(0))?;
    assert_eq!(
        (
            emf["Applied"].as_u64(),
            emf["Duplicates"].as_u64(),
            emf["Conflicts"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    let calls = lock(&captured).clone();
    assert_eq!(calls.len(), 2);
    // the first try carried both decisions; the redo only t2, conditioned on version 1
    assert_eq!(calls[0].transact_items().len(), 3);
    let redo = &calls[1];
    let ids: Vec<String> = decision_puts(redo).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["t2"]);
    let put = redo
        .transact_items()
        .last()
        .and_then(|i| i.put())
        .context("a portfolio put")?;
    assert_eq!(put.condition_expression(), Some("#version = :expected"));
    assert_eq!(
        put.expression_attribute_values()
            .and_then(|v| v.get(":expected")),
        Some(&AttributeValue::N("1".into()))
    );
    assert_eq!(
        put.item().get("version"),
        Some(&AttributeValue::N("2".into()))
    );
    assert_eq!(
        put.item().get("usd_balance"),
        Some(&AttributeValue::N("101.00".into()))
    );
    assert_eq!(
        put.item().get("cost_basis_cop"),
        Some(&AttributeValue::N("404000.00".into()))
    );
    // a decision is written once, ever (or again only as the same user's pending record)
    let decision = redo
        .transact_items()
        .first()
        .and_then(|i| i.put())
        .context("a decision put")?;
    assert_eq!(
        decision.condition_expression(),
        Some(
            "attribute_not_exists(trade_id) OR (pending_sequence = :sequence AND user_id = :user)"
        )
    );
    let values = decision
        .expression_attribute_values()
        .context("condition values")?;
    assert_eq!(
        values.get(":sequence"),
        decision
            .item()
            .get("sequence_number")
            .and_then(|v| v.as_s().ok())
            .map(|s| AttributeValue::S(lago::trades::sequence_key(s)))
            .as_ref()
    );
    assert_eq!(values.get(":user"), decision.item().get("user_id"));
    // a final commit's decisions are not pending
    assert_eq!(decision.item().get("pending_sequence"), None);
    Ok(())
}

#[tokio::test]
async fn unprocessed_keys_are_read_again() -> anyhow::Result<()> {
    // GIVEN BatchGetItem leaves one key unprocessed once
    let reads = mock!(aws_sdk_dynamodb::Client::batch_get_item)
        .sequence()
        .output(|| {
            let key = HashMap::from([("user_id".to_string(), AttributeValue::S("bo".into()))]);
            BatchGetItemOutput::builder()
                .responses(PORTFOLIOS, vec![])
                .unprocessed_keys(
                    PORTFOLIOS,
                    KeysAndAttributes::builder()
                        .keys(key)
                        .build()
                        .expect("keys are set"),
                )
                .build()
        })
        .output(|| found(vec![]))
        .build();
    let writes = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_output(committed);
    let stream = mocked_stream(dynamodb(&[&reads, &writes]));
    let batch = event(
        1,
        &[
            trade("a1", "ana", "BUY", "1", "4000"),
            trade("b1", "bo", "BUY", "1", "4000"),
        ],
    )?;
    // WHEN the batch runs
    let (result, _) = stream.handle(&batch, now()).await;
    // THEN the key was asked again and the batch went through
    assert!(result?.batch_item_failures.is_empty());
    assert_eq!(reads.num_calls(), 2);
    assert_eq!(writes.num_calls(), 2);
    Ok(())
}

#[tokio::test]
async fn unprocessed_keys_that_never_clear_stop_the_batch() -> anyhow::Result<()> {
    let reads = mock!(aws_sdk_dynamodb::Client::batch_get_item).then_output(|| {
        let key = HashMap::from([("user_id".to_string(), AttributeValue::S("ana".into()))]);
        BatchGetItemOutput::builder()
            .unprocessed_keys(
                PORTFOLIOS,
                KeysAndAttributes::builder()
                    .keys(key)
                    .build()
                    .expect("keys are set"),
            )
            .build()
    });
    let stream = mocked_stream(dynamodb(&[&reads]));
    let batch = event(1, &[trade("a1", "ana", "BUY", "1", "4000")])?;
    let (result, _) = stream.handle(&batch, now()).await;
    let failures = result?.batch_item_failures;
    assert_eq!(failures.len(), 1);
    assert_eq!(reads.num_calls(), 3);
    Ok(())
}

fn dead_letter(i: usize) -> DeadLetter {
    DeadLetter {
        reason: "invalid_json".into(),
        detail: "expected value".into(),
        shard_id: "shardId-000000000000".into(),
        sequence_number: i.to_string(),
        sub_sequence_number: None,
        data: format!("garbage {i}"),
        data_encoding: DataEncoding::Utf8,
        trade_id: None,
        user_id: None,
    }
}

#[tokio::test]
async fn dead_letters_go_in_tens_and_throttled_entries_are_sent_again() -> anyhow::Result<()> {
    // GIVEN SQS throttles entry 3 the first time it sees it
    let throttled = Arc::new(Mutex::new(false));
    let sent: Captured<String> = Arc::default();
    let s = Arc::clone(&sent);
    let batches =
        mock!(aws_sdk_sqs::Client::send_message_batch).then_compute_output(move |input| {
            let mut out = SendMessageBatchOutput::builder()
                .set_successful(Some(Vec::new()))
                .set_failed(Some(Vec::new()));
            let mut throttled = lock(&throttled);
            for entry in input.entries() {
                if !*throttled && entry.id() == "3" {
                    *throttled = true;
                    out = out.failed(
                        BatchResultErrorEntry::builder()
                            .id("3")
                            .code("ThrottlingException")
                            .sender_fault(false)
                            .build()
                            .expect("fields are set"),
                    );
                } else {
                    lock(&s).push(entry.message_body().to_string());
                }
            }
            out.build().expect("fields are set")
        });
    let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, &[&batches]);
    let sink = SqsDeadLetterSink::new(client, "https://sqs.local/q")
        .with_retries(3, Duration::from_millis(1));
    // WHEN 23 dead letters are sent
    let letters: Vec<DeadLetter> = (0..23).map(dead_letter).collect();
    sink.send(&letters).await?;
    // THEN 3 calls of at most 10, one more for the throttled entry, and each letter once
    assert_eq!(batches.num_calls(), 4);
    let bodies = lock(&sent).clone();
    assert_eq!(bodies.len(), 23);
    let mut seqs: Vec<usize> = bodies
        .iter()
        .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .filter_map(|v| v["sequence_number"].as_str().and_then(|s| s.parse().ok()))
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..23).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn notifications_carry_the_filter_attributes() -> anyhow::Result<()> {
    let captured: Captured<PublishBatchInput> = Arc::default();
    let c = Arc::clone(&captured);
    let publish = mock!(aws_sdk_sns::Client::publish_batch)
        .match_requests(move |input| {
            lock(&c).push(input.clone());
            true
        })
        .then_output(|| PublishBatchOutput::builder().build());
    let client = mock_client!(aws_sdk_sns, RuleMode::MatchAny, &[&publish]);
    let notifier = SnsNotifier::new(client, "arn:aws:sns:us-east-1:123456789012:lago-trades");

    // GIVEN the notifications of a processed batch
    let processor = TradeProcessor::new(lago::trades::MemoryPortfolioStore::new());
    let lines: Vec<String> = (0..12)
        .map(|i| trade(&format!("t{i}"), "ana", "BUY", "1", "4000"))
        .chain([trade("s1", "ana", "SELL", "100", "4000")])
        .collect();
    let batch = event(1, &lines)?;
    let outcome = processor
        .process_batch(&batch.expand().records(&batch), now())
        .await;
    assert_eq!(outcome.notifications.len(), 13);

    // WHEN published
    notifier.publish(&outcome.notifications).await?;

    // THEN two calls, every entry with user_id, side and kind
    let calls = lock(&captured).clone();
    let sizes: Vec<usize> = calls
        .iter()
        .map(|c| c.publish_batch_request_entries().len())
        .collect();
    assert_eq!(sizes, [10, 3]);
    let last = calls
        .last()
        .and_then(|c| c.publish_batch_request_entries().last())
        .context("the rejection")?;
    let attribute = |name: &str| {
        last.message_attributes()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value())
            .map(str::to_string)
    };
    assert_eq!(attribute("user_id").as_deref(), Some("ana"));
    assert_eq!(attribute("side").as_deref(), Some("SELL"));
    assert_eq!(attribute("kind").as_deref(), Some("TradeRejected"));
    let body: serde_json::Value = serde_json::from_str(last.message())?;
    assert_eq!(body["reason"], "insufficient_balance");
    Ok(())
}

#[tokio::test]
async fn the_model_answers_through_the_documented_contract() -> anyhow::Result<()> {
    let seen: Captured<serde_json::Value> = Arc::default();
    let s = Arc::clone(&seen);
    let invoke = mock!(aws_sdk_sagemakerruntime::Client::invoke_endpoint)
        .match_requests(move |input| {
            if let Some(body) = input.body() {
                if let Ok(v) = serde_json::from_slice(body.as_ref()) {
                    lock(&s).push(v);
                }
            }
            input.content_type() == Some("application/json")
        })
        .then_output(|| {
            InvokeEndpointOutput::builder()
                .body(Blob::new(
                    r#"{"predictions": [{"action": "TAKE_PROFIT", "reason": "rate 6% above cost"}]}"#,
                ))
                .build()
        });
    let client = mock_client!(aws_sdk_sagemakerruntime, RuleMode::MatchAny, &[&invoke]);
    let model = SageMakerRecommender::new(client, "lago-recommender", Duration::from_secs(1));
    let processor = TradeProcessor::with_recommender(
        lago::trades::MemoryPortfolioStore::new(),
        WithRuleFallback::new(Some(model), RuleRecommender::default()),
    );
    let batch = event(1, &[trade("t1", "ana", "BUY", "150", "4033.5")])?;
    let outcome = processor
        .process_batch(&batch.expand().records(&batch), now())
        .await;

    let rec = &outcome.recommendations[0].recommendation;
    assert_eq!(rec.source, RecommendationSource::Model);
    assert_eq!(rec.reason, "rate 6% above cost");
    let mut request = lock(&seen).first().cloned().context("a request")?;
    // The average cost is a decimal string of at most 4 places (compared by value).
    let average = request["instances"][0]
        .as_object_mut()
        .and_then(|i| i.remove("average_cost_cop"))
        .and_then(|a| a.as_str().map(str::to_string))
        .context("average_cost_cop")?;
    assert_eq!(Decimal::from_str(&average)?, Decimal::from_str("4033.5")?);
    assert_eq!(
        request,
        serde_json::json!({"instances": [{
            "user_id": "ana",
            "usd_balance": "150.00",
            "cost_basis_cop": "605025.00",
            "realized_pnl_cop": "0.00",
            "latest_rate": "4033.5000"
        }]})
    );
    Ok(())
}

#[tokio::test]
async fn a_failing_model_falls_back_to_the_rule() -> anyhow::Result<()> {
    // GIVEN an endpoint that answers 500 on every attempt, then garbage
    let invoke = mock!(aws_sdk_sagemakerruntime::Client::invoke_endpoint)
        .sequence()
        .http_status(500, None)
        .times(lago::aws::MAX_ATTEMPTS as usize)
        .output(|| {
            InvokeEndpointOutput::builder()
                .body(Blob::new(r#"{"predictions": [{"action": "YOLO"}]}"#))
                .build()
        })
        .build();
    let client = mock_client!(
        aws_sdk_sagemakerruntime,
        RuleMode::MatchAny,
        &[&invoke],
        |b| {
            b.retry_config(lago::aws::retry_config().with_initial_backoff(Duration::from_millis(1)))
        }
    );
    let model = SageMakerRecommender::new(client, "lago-recommender", Duration::from_secs(5));
    let processor = TradeProcessor::with_recommender(
        lago::trades::MemoryPortfolioStore::new(),
        WithRuleFallback::new(Some(model), RuleRecommender::default()),
    );
    for (i, first) in [(1u64, "t1"), (2, "t2")] {
        let batch = event(i, &[trade(first, "ana", "BUY", "1", "4000")])?;
        // WHEN a batch runs
        let outcome = processor
            .process_batch(&batch.expand().records(&batch), now())
            .await;
        // THEN it succeeds with the rule's recommendation
        assert_eq!(outcome.applied, 1);
        assert_eq!(
            outcome.recommendations[0].recommendation.source,
            RecommendationSource::Rule
        );
    }
    assert!(invoke.is_exhausted());
    Ok(())
}
