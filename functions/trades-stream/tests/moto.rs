//! The real handler with real SDK clients against a moto server: DynamoDB tables, the SQS DLQ,
//! the lake bucket and the SNS topic are created in moto, Kinesis events (the fixture, and
//! generated trades) go through the handler, and what moto recorded is read back with the SDK:
//! DynamoDB items (exact decimal strings), DLQ messages, the archived object (downloaded and
//! gunzipped) and the SNS publishes (delivered to SQS subscriptions, one with a filter policy).
//!
//! Needs `LAGO_MOTO_ENDPOINT` (`source scripts/moto.sh && moto_start`); without it each test
//! prints why and passes without running.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{anyhow, bail, Context};
use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use flate2::read::GzDecoder;
use lago::aws::trades::dynamodb::{portfolio_from_item, DynamoDbPortfolioStore};
use lago::trades::{
    generate_trades, sequence_key, Commit, CommitOutcome, Decision, DecisionOutcome,
    MemoryPortfolioStore, Portfolio, PortfolioStore, ProcessorConfig, RecordingArchive,
    RecordingDeadLetters, RecordingNotifier, Trade, TradeGenerateOptions, TradeProcessor,
};
use rust_decimal::Decimal;
use trades_stream::{
    aws_trade_stream, AwsClients, AwsTradeStream, Config, KinesisTradeEvent, TradeStream,
};

const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../events/kinesis-trades.json"
));

type Item = HashMap<String, AttributeValue>;

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_795_971_700, 0).unwrap_or_default()
}

/// Resources of one test, named uniquely so tests share one moto server.
struct Moto {
    sdk: aws_config::SdkConfig,
    clients: AwsClients,
    config: Config,
    /// Subscribed to the topic with raw delivery: every notification.
    all_events_url: String,
    /// Subscribed with the filter policy `{"side": ["SELL"]}`.
    sells_url: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Moto {
    async fn create(endpoint: &str, test: &str) -> anyhow::Result<Moto> {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .retry_config(lago::aws::retry_config())
            .load()
            .await;
        let name = format!(
            "lago-{test}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
        .replace('_', "-");
        let config = Config {
            portfolios_table: format!("{name}-portfolios"),
            decisions_table: format!("{name}-decisions"),
            dead_letter_queue_url: String::new(),
            topic_arn: String::new(),
            lake_bucket: format!("{name}-lake"),
            recommender_endpoint: None,
            recommender_timeout: trades_stream::config::DEFAULT_RECOMMENDER_TIMEOUT,
            store_concurrency: 32,
            delivery_reserve: trades_stream::config::DEFAULT_DELIVERY_RESERVE,
            stream_failure_queue_url: None,
            stream_retention_hours: trades_stream::config::DEFAULT_STREAM_RETENTION_HOURS,
            s3_force_path_style: true,
        };
        let clients = AwsClients::new(&sdk, &config);
        for (table, key) in [
            (&config.portfolios_table, "user_id"),
            (&config.decisions_table, "trade_id"),
        ] {
            clients
                .dynamodb
                .create_table()
                .table_name(table)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(key)
                        .attribute_type(ScalarAttributeType::S)
                        .build()?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(key)
                        .key_type(KeyType::Hash)
                        .build()?,
                )
                .send()
                .await?;
        }
        clients
            .s3
            .create_bucket()
            .bucket(&config.lake_bucket)
            .send()
            .await?;
        let queue = |suffix: &str| {
            let sqs = clients.sqs.clone();
            let queue_name = format!("{name}-{suffix}");
            async move {
                let url = sqs
                    .create_queue()
                    .queue_name(queue_name)
                    .send()
                    .await?
                    .queue_url
                    .context("a queue URL")?;
                let arn = sqs
                    .get_queue_attributes()
                    .queue_url(&url)
                    .attribute_names(QueueAttributeName::QueueArn)
                    .send()
                    .await?
                    .attributes
                    .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
                    .context("a queue ARN")?;
                anyhow::Ok((url, arn))
            }
        };
        let (dlq_url, _) = queue("dlq").await?;
        let (all_events_url, all_events_arn) = queue("all-events").await?;
        let (sells_url, sells_arn) = queue("sells").await?;
        let topic_arn = clients
            .sns
            .create_topic()
            .name(format!("{name}-trade-events"))
            .send()
            .await?
            .topic_arn
            .context("a topic ARN")?;
        for (arn, filter) in [
            (all_events_arn, None),
            (sells_arn, Some(r#"{"side": ["SELL"]}"#)),
        ] {
            let mut subscribe = clients
                .sns
                .subscribe()
                .topic_arn(&topic_arn)
                .protocol("sqs")
                .endpoint(arn)
                .attributes("RawMessageDelivery", "true");
            if let Some(policy) = filter {
                subscribe = subscribe.attributes("FilterPolicy", policy);
            }
            subscribe.send().await?;
        }
        let config = Config {
            dead_letter_queue_url: dlq_url,
            topic_arn,
            ..config
        };
        Ok(Moto {
            sdk,
            clients,
            config,
            all_events_url,
            sells_url,
        })
    }

    fn stream(&self) -> AwsTradeStream {
        aws_trade_stream(&self.clients, &self.config)
    }

    async fn portfolio_item(&self, user: &str) -> anyhow::Result<Option<Item>> {
        Ok(self
            .clients
            .dynamodb
            .get_item()
            .table_name(&self.config.portfolios_table)
            .key("user_id", AttributeValue::S(user.into()))
            .consistent_read(true)
            .send()
            .await?
            .item)
    }

    async fn scan(&self, table: &str) -> anyhow::Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .clients
                .dynamodb
                .scan()
                .table_name(table)
                .set_exclusive_start_key(start.take())
                .send()
                .await?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// Every message on a queue (received and deleted), with its message attributes.
    async fn drain(&self, url: &str) -> anyhow::Result<Vec<(String, BTreeMap<String, String>)>> {
        let mut messages = Vec::new();
        loop {
            let page = self
                .clients
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await?;
            let received = page.messages.unwrap_or_default();
            if received.is_empty() {
                return Ok(messages);
            }
            for m in received {
                let attributes = m
                    .message_attributes
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(k, v)| v.string_value.map(|s| (k, s)))
                    .collect();
                messages.push((m.body.unwrap_or_default(), attributes));
                if let Some(handle) = m.receipt_handle {
                    self.clients
                        .sqs
                        .delete_message()
                        .queue_url(url)
                        .receipt_handle(handle)
                        .send()
                        .await?;
                }
            }
        }
    }

    async fn queue_depth(&self, url: &str) -> anyhow::Result<u64> {
        let depth = self
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::ApproximateNumberOfMessages))
            .context("a queue depth")?;
        Ok(depth.parse()?)
    }

    async fn archive_keys(&self) -> anyhow::Result<Vec<String>> {
        let listed = self
            .clients
            .s3
            .list_objects_v2()
            .bucket(&self.config.lake_bucket)
            .prefix("raw/trades/")
            .send()
            .await?;
        Ok(listed
            .contents
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| o.key)
            .collect())
    }

    async fn archive_lines(&self, key: &str) -> anyhow::Result<Vec<String>> {
        let object = self
            .clients
            .s3
            .get_object()
            .bucket(&self.config.lake_bucket)
            .key(key)
            .send()
            .await?;
        let body = object.body.collect().await?.into_bytes();
        let mut text = String::new();
        GzDecoder::new(&body[..]).read_to_string(&mut text)?;
        Ok(text.lines().map(str::to_string).collect())
    }
}

fn n(item: &Item, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => Some(v.clone()),
        _ => None,
    }
}

fn s(item: &Item, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn the_fixture_lands_in_dynamodb_sqs_s3_and_sns() -> anyhow::Result<()> {
    let Some(endpoint) = lago::aws::moto_endpoint("the_fixture_lands_in_dynamodb_sqs_s3_and_sns")
    else {
        return Ok(());
    };
    // GIVEN the tables, queues, bucket and topic in moto, and the handler on real clients
    let moto = Moto::create(&endpoint, "fixture").await?;
    let stream = moto.stream();
    let event: KinesisTradeEvent = serde_json::from_str(FIXTURE)?;

    // WHEN the fixture event is handled
    let (result, _) = stream.handle(&event, now()).await;
    let response = result?;
    assert!(response.batch_item_failures.is_empty());

    // THEN the portfolios hold the exact decimal strings
    let one = moto
        .portfolio_item("user-0001")
        .await?
        .context("user-0001")?;
    let fields = |item: &Item| {
        [
            "version",
            "usd_balance",
            "cost_basis_cop",
            "realized_pnl_cop",
            "trades_applied",
            "last_rate",
        ]
        .map(|f| n(item, f).unwrap_or_default())
    };
    assert_eq!(
        fields(&one),
        ["1", "250.50", "1005643.15", "13545.65", "3", "4150.0000"]
    );
    assert_eq!(
        s(&one, "last_trade_id").as_deref(),
        Some("trd-20261128-000008")
    );
    assert_eq!(n(&one, "average_cost_cop").as_deref(), Some("4014.5435"));
    let two = moto
        .portfolio_item("user-0002")
        .await?
        .context("user-0002")?;
    assert_eq!(
        fields(&two),
        ["1", "600.00", "2406072.00", "36152.00", "2", "4100.5000"]
    );
    let three = moto
        .portfolio_item("user-0003")
        .await?
        .context("user-0003")?;
    assert_eq!(
        fields(&three),
        ["1", "20.00", "80999.80", "0.00", "1", "4049.9900"]
    );
    assert_eq!(moto.portfolio_item("user-0004").await?, None);
    let recommendation = match one.get("recommendation") {
        Some(AttributeValue::M(m)) => s(m, "source"),
        _ => None,
    };
    assert_eq!(recommendation.as_deref(), Some("rule"));

    // AND one decision per trade id: 6 applied, 1 rejected
    let decisions = moto.scan(&moto.config.decisions_table).await?;
    let outcomes: BTreeMap<String, String> = decisions
        .iter()
        .map(|d| {
            (
                s(d, "trade_id").unwrap_or_default(),
                s(d, "outcome").unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(outcomes.len(), 7);
    assert_eq!(outcomes.values().filter(|o| *o == "APPLIED").count(), 6);
    assert_eq!(
        outcomes.get("trd-20261128-000007").map(String::as_str),
        Some("REJECTED")
    );
    let first = decisions
        .iter()
        .find(|d| s(d, "trade_id").as_deref() == Some("trd-20261128-000001"))
        .context("the first trade's decision")?;
    assert_eq!(n(first, "cop_amount").as_deref(), Some("1003087.50"));
    assert_eq!(n(first, "usd_amount").as_deref(), Some("250.00"));
    assert_eq!(n(first, "rate").as_deref(), Some("4012.3500"));

    // AND the DLQ holds the three records with reason, data, shard and sequence number
    let letters = moto.drain(&moto.config.dead_letter_queue_url).await?;
    let mut reasons: Vec<(String, String)> = Vec::new();
    for (body, attributes) in &letters {
        let v: serde_json::Value = serde_json::from_str(body)?;
        assert_eq!(v["shard_id"], "shardId-000000000000");
        assert_eq!(
            attributes.get("reason").map(String::as_str),
            v["reason"].as_str()
        );
        assert!(v["data"].as_str().is_some_and(|d| !d.is_empty()));
        reasons.push((
            v["reason"].as_str().unwrap_or_default().to_string(),
            v["sequence_number"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
    }
    reasons.sort();
    assert_eq!(
        reasons,
        [
            (
                "insufficient_balance".to_string(),
                event.records[6].kinesis.sequence_number.clone()
            ),
            (
                "invalid_field:usd_amount".to_string(),
                event.records[8].kinesis.sequence_number.clone()
            ),
            (
                "invalid_json".to_string(),
                event.records[4].kinesis.sequence_number.clone()
            ),
        ]
    );

    // AND the archive is one object of the 8 valid records
    let keys = moto.archive_keys().await?;
    assert_eq!(keys.len(), 1);
    assert!(keys[0].starts_with("raw/trades/year=2026/month=11/day=28/shardId-000000000000-"));
    let lines = moto.archive_lines(&keys[0]).await?;
    assert_eq!(lines.len(), 8);
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for line in &lines {
        let trade: serde_json::Value = serde_json::from_str(line)?;
        assert!(trade["trade_id"]
            .as_str()
            .is_some_and(|t| t.starts_with("trd-")));
        assert!(trade["sequence_number"]
            .as_str()
            .is_some_and(|s| event.records.iter().any(|r| r.kinesis.sequence_number == s)));
        assert!(trade["arrived_at"].as_str().is_some());
        *statuses
            .entry(format!("{}:{}", trade["status"], trade["reason"]))
            .or_default() += 1;
    }
    assert_eq!(
        statuses,
        [
            (r#""applied":"""#.to_string(), 6),
            (r#""duplicate":"""#.to_string(), 1),
            (r#""rejected":"insufficient_balance""#.to_string(), 1),
        ]
        .into()
    );

    // AND SNS published 7 notifications with their attributes; the SELL filter saw 3
    let events = moto.drain(&moto.all_events_url).await?;
    assert_eq!(events.len(), 7);
    for (body, attributes) in &events {
        let v: serde_json::Value = serde_json::from_str(body)?;
        assert_eq!(
            attributes.get("user_id").map(String::as_str),
            v["user_id"].as_str()
        );
        assert_eq!(
            attributes.get("side").map(String::as_str),
            v["side"].as_str()
        );
        assert_eq!(
            attributes.get("kind").map(String::as_str),
            v["kind"].as_str()
        );
    }
    let sells = moto.drain(&moto.sells_url).await?;
    let mut sold: Vec<String> = sells
        .iter()
        .filter_map(|(body, _)| serde_json::from_str::<serde_json::Value>(body).ok())
        .map(|v| {
            format!(
                "{} {}",
                v["trade_id"].as_str().unwrap_or(""),
                v["kind"].as_str().unwrap_or("")
            )
        })
        .collect();
    sold.sort();
    assert_eq!(
        sold,
        [
            "trd-20261128-000006 TradeConfirmed",
            "trd-20261128-000007 TradeRejected",
            "trd-20261128-000008 TradeConfirmed"
        ]
    );

    // WHEN Kinesis delivers the same batch again
    let (result, metrics) = stream.handle(&event, now()).await;
    assert!(result?.batch_item_failures.is_empty());

    // THEN nothing changes: every trade is a duplicate
    let emf: serde_json::Value = serde_json::from_str(&metrics.to_json(0))?;
    assert_eq!(
        (emf["Applied"].as_u64(), emf["Duplicates"].as_u64()),
        (Some(0), Some(8))
    );
    let again = moto
        .portfolio_item("user-0001")
        .await?
        .context("user-0001")?;
    assert_eq!(again, one);
    assert_eq!(moto.scan(&moto.config.decisions_table).await?.len(), 7);
    // AND the first delivery's decisions stay archived: the redelivery, all duplicates, is a
    // second object of the same batch beside it
    let archived = moto.archive_keys().await?;
    assert_eq!(archived.len(), 2);
    assert!(archived.contains(&keys[0]));
    let redelivered = archived
        .iter()
        .find(|k| **k != keys[0])
        .context("the redelivery's object")?;
    let batch_name = |k: &str| k.rsplit_once('-').map(|(named, _)| named.to_string());
    assert_eq!(batch_name(redelivered), batch_name(&keys[0]));
    let lines = moto.archive_lines(redelivered).await?;
    assert_eq!(lines.len(), 8);
    assert!(lines.iter().all(|l| l.contains(r#""status":"duplicate""#)));
    assert_eq!(moto.archive_lines(&keys[0]).await?.len(), 8);
    assert_eq!(moto.queue_depth(&moto.all_events_url).await?, 0);
    // the two invalid records are dead-lettered again (at least once); the rejection is not
    assert_eq!(
        moto.drain(&moto.config.dead_letter_queue_url).await?.len(),
        2
    );
    Ok(())
}

/// Kinesis events of `lines` (one record each) in batches of `batch`, sequence numbers
/// continuing across batches.
fn batches(lines: &[&str], batch: usize) -> anyhow::Result<Vec<KinesisTradeEvent>> {
    shard_batches(2, lines, batch)
}

/// Kinesis events of `shard`'s records, `batch` at a time, sequence numbers from 1.
fn shard_batches(
    shard: usize,
    lines: &[&str],
    batch: usize,
) -> anyhow::Result<Vec<KinesisTradeEvent>> {
    let mut events = Vec::new();
    for (b, chunk) in lines.chunks(batch).enumerate() {
        let records: Vec<serde_json::Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let seq = format!("{:056}", 1 + b * batch + i);
                serde_json::json!({
                    "eventID": format!("shardId-{shard:012}:{seq}"),
                    "eventSource": "aws:kinesis",
                    "kinesis": {
                        "sequenceNumber": seq,
                        "partitionKey": "generated",
                        "data": base64::engine::general_purpose::STANDARD.encode(line),
                    },
                })
            })
            .collect();
        events.push(serde_json::from_value(
            serde_json::json!({ "Records": records }),
        )?);
    }
    Ok(events)
}

#[tokio::test]
async fn generated_trades_match_the_in_memory_replay() -> anyhow::Result<()> {
    let Some(endpoint) = lago::aws::moto_endpoint("generated_trades_match_the_in_memory_replay")
    else {
        return Ok(());
    };
    // GIVEN 600 generated trades of 25 users, 10 % dirty, in Kinesis batches of 200
    let mut ndjson = Vec::new();
    let report = generate_trades(
        &TradeGenerateOptions {
            trades: 600,
            users: 25,
            seed: 7,
            dirty_pct: 10.0,
            span_days: 0,
        },
        &mut ndjson,
    )?;
    let text = String::from_utf8(ndjson)?;
    let lines: Vec<&str> = text.lines().collect();
    let events = batches(&lines, 200)?;
    let moto = Moto::create(&endpoint, "generated").await?;
    let stream = moto.stream();
    let memory = TradeStream::new(
        TradeProcessor::new(MemoryPortfolioStore::new()),
        RecordingArchive::new(),
        RecordingDeadLetters::new(),
        RecordingNotifier::new(),
    );

    // WHEN every batch goes through the handler on moto (batch 2 delivered twice, as Kinesis
    // may), and through the in-memory twin once
    let mut applied = 0;
    let mut duplicates = 0;
    for (i, event) in events.iter().chain([&events[1]]).enumerate() {
        let emf = handle_whole(&stream, event, i).await?;
        applied += emf["Applied"].as_u64().unwrap_or_default();
        duplicates += emf["Duplicates"].as_u64().unwrap_or_default();
    }
    for event in &events {
        let (result, _) = memory.handle(event, now()).await;
        result?;
    }

    // THEN each trade applied once, and the redelivered batch is all duplicates
    let redelivered_valid = events[1].records.len() as u64
        - lines[200..400]
            .iter()
            .filter(|l| lago::trades::Trade::parse(l.as_bytes()).is_err())
            .count() as u64;
    assert_eq!(applied, report.valid);
    assert_eq!(duplicates, report.duplicates + redelivered_valid);

    // AND DynamoDB holds exactly the in-memory portfolios (every amount, version and
    // recommendation)
    let items = moto.scan(&moto.config.portfolios_table).await?;
    assert_eq!(items.len() as u64, report.users);
    for item in &items {
        let stored = portfolio_from_item(item)?;
        let twin = memory
            .processor()
            .store()
            .portfolio(&stored.portfolio.user_id)
            .context("the twin has the user")?;
        assert_eq!(stored, twin, "{}", stored.portfolio.user_id);
        // the strings written are the decimals' own text
        assert_eq!(
            n(item, "usd_balance")
                .map(|v| Decimal::from_str(&v).map(|d| d.scale()))
                .transpose()?,
            Some(2)
        );
    }
    let decisions = moto.scan(&moto.config.decisions_table).await?;
    assert_eq!(decisions.len() as u64, report.valid + report.oversells);

    // AND the DLQ, the archive and SNS saw every record they should
    let letters = moto.queue_depth(&moto.config.dead_letter_queue_url).await?;
    let invalid = report.malformed + report.invalid_fields;
    // the redelivered batch dead-letters its invalid records again
    let invalid_in_batch_2 = (events[1].records.len() as u64) - redelivered_valid;
    assert_eq!(letters, invalid + report.oversells + invalid_in_batch_2);
    // one object per batch, and one more for the redelivery (its lines say duplicate)
    assert_eq!(moto.archive_keys().await?.len(), events.len() + 1);
    let published = moto.queue_depth(&moto.all_events_url).await?;
    assert_eq!(published, report.valid + report.oversells);
    Ok(())
}

/// A load test, bounded in records and time: three shards' worth of generated trades (with
/// redeliveries, malformed records and oversells) go through the handler on moto, the shards
/// concurrently and each user's commits 32 at a time, one batch per shard delivered twice. The
/// result must be the sequential processor's: the same portfolios, the same decision for every
/// trade id, each trade applied once.
#[tokio::test]
async fn concurrent_shards_end_as_the_sequential_processor_in_moto() -> anyhow::Result<()> {
    let Some(endpoint) =
        lago::aws::moto_endpoint("concurrent_shards_end_as_the_sequential_processor_in_moto")
    else {
        return Ok(());
    };
    // GIVEN 600 generated trades of 60 users, 5 % dirty, split into three shards by user (as
    // the partition key does), in batches of 100 (moto copies a table per transaction, so more
    // is slow there, not here)
    const SHARDS: usize = 3;
    let mut ndjson = Vec::new();
    let report = generate_trades(
        &TradeGenerateOptions {
            trades: 600,
            users: 60,
            seed: 11,
            dirty_pct: 5.0,
            span_days: 0,
        },
        &mut ndjson,
    )?;
    let text = String::from_utf8(ndjson)?;
    let mut per_shard: Vec<Vec<&str>> = vec![Vec::new(); SHARDS];
    for line in text.lines() {
        // Malformed lines have no user: any shard takes them.
        let shard = lago::trades::Trade::parse(line.as_bytes())
            .map(|t| t.user_id.bytes().map(usize::from).sum::<usize>() % SHARDS)
            .unwrap_or(0);
        per_shard[shard].push(line);
    }
    let shards: Vec<Vec<KinesisTradeEvent>> = per_shard
        .iter()
        .enumerate()
        .map(|(shard, lines)| shard_batches(shard, lines, 100))
        .collect::<anyhow::Result<_>>()?;
    let moto = Moto::create(&endpoint, "load").await?;
    let stream = moto.stream();

    // WHEN the shards are consumed at once (a redelivery of each shard's first batch at its
    // end), within a time limit
    let all = futures_util::future::join_all(shards.iter().map(|events| consume(&stream, events)));
    let applied: u64 = tokio::time::timeout(std::time::Duration::from_secs(120), all)
        .await
        .context("the load test did not finish in 120 s")?
        .into_iter()
        .sum::<anyhow::Result<u64>>()?;

    // AND the same batches go through the sequential processor in memory
    let reference = TradeStream::new(
        TradeProcessor::new(MemoryPortfolioStore::new()).with_config(ProcessorConfig {
            commit_concurrency: 1,
            ..ProcessorConfig::default()
        }),
        RecordingArchive::new(),
        RecordingDeadLetters::new(),
        RecordingNotifier::new(),
    );
    for events in &shards {
        for event in events.iter().chain(events.first()) {
            reference.handle(event, now()).await.0?;
        }
    }

    // THEN each valid trade was applied once
    assert_eq!(applied, report.valid);
    // AND DynamoDB holds the reference's portfolios, versions and stream positions
    let want = reference.processor().store();
    let items = moto.scan(&moto.config.portfolios_table).await?;
    assert_eq!(items.len(), want.portfolios().len());
    for item in &items {
        let stored = portfolio_from_item(item)?;
        let twin = want
            .portfolio(&stored.portfolio.user_id)
            .context("the reference has the user")?;
        assert_eq!(stored, twin, "{}", stored.portfolio.user_id);
    }
    // AND every trade id has the reference's decision
    let decisions = moto.scan(&moto.config.decisions_table).await?;
    assert_eq!(decisions.len(), want.decided_count());
    for item in &decisions {
        let id = s(item, "trade_id").context("trade_id")?;
        let applied = s(item, "outcome").map(|o| o == "APPLIED");
        assert_eq!(applied, want.decision(&id), "{id}");
        assert_eq!(s(item, "pending_sequence"), None, "{id}");
    }
    Ok(())
}

/// Handles a shard's batches in order (then its first batch again, as a redelivery) and
/// returns how many trades were applied.
async fn consume(stream: &AwsTradeStream, events: &[KinesisTradeEvent]) -> anyhow::Result<u64> {
    let mut applied = 0u64;
    for (i, event) in events.iter().chain(events.first()).enumerate() {
        let emf = handle_whole(stream, event, i).await?;
        applied += emf["Applied"].as_u64().unwrap_or_default();
    }
    Ok(applied)
}

/// Handles batch `i`, which must settle whole (no `batchItemFailures`); returns its EMF record.
async fn handle_whole(
    stream: &AwsTradeStream,
    event: &KinesisTradeEvent,
    i: usize,
) -> anyhow::Result<serde_json::Value> {
    let (result, metrics) = stream.handle(event, now()).await;
    let response = result.map_err(|e| anyhow!("batch {i}: {e}"))?;
    if !response.batch_item_failures.is_empty() {
        bail!(
            "batch {i} reported failures: {:?}",
            response.batch_item_failures
        );
    }
    Ok(serde_json::from_str(&metrics.to_json(0))?)
}

fn buy_line(id: &str, user: &str) -> String {
    format!(
        r#"{{"trade_id":"{id}","user_id":"{user}","side":"BUY","usd_amount":"1.00","rate":"4000.0000","executed_at":"2026-11-28T17:00:00Z"}}"#
    )
}

#[tokio::test]
async fn a_heavy_user_commits_pending_transactions_then_the_final_one() -> anyhow::Result<()> {
    let Some(endpoint) =
        lago::aws::moto_endpoint("a_heavy_user_commits_pending_transactions_then_the_final_one")
    else {
        return Ok(());
    };
    // GIVEN one batch with 250 trades of one user and 5 of another
    let mut lines: Vec<String> = (1..=250)
        .map(|i| buy_line(&format!("h{i}"), "heavy"))
        .collect();
    lines.extend((1..=5).map(|i| buy_line(&format!("l{i}"), "light")));
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let events = batches(&lines, lines.len())?;
    let moto = Moto::create(&endpoint, "heavy").await?;
    let stream = moto.stream();

    // WHEN it is handled, then delivered again
    let (first, _) = stream.handle(&events[0], now()).await;
    assert!(first?.batch_item_failures.is_empty());
    let (again, metrics) = stream.handle(&events[0], now()).await;
    assert!(again?.batch_item_failures.is_empty());

    // THEN the heavy user went out as ceil(251 / 100) = 3 transactions: its portfolio is at
    // version 1 with every trade, and the last sequence number stored zero-padded
    let heavy = moto.portfolio_item("heavy").await?.context("heavy")?;
    assert_eq!(n(&heavy, "version").as_deref(), Some("1"));
    assert_eq!(n(&heavy, "trades_applied").as_deref(), Some("250"));
    assert_eq!(n(&heavy, "usd_balance").as_deref(), Some("250.00"));
    assert_eq!(s(&heavy, "last_sequence"), Some(format!("{:064}", 250)));
    // AND the decisions of the two pending transactions carry their sequence numbers
    let decisions = moto.scan(&moto.config.decisions_table).await?;
    assert_eq!(decisions.len(), 255);
    let mut pending: Vec<String> = decisions
        .iter()
        .filter_map(|d| s(d, "pending_sequence"))
        .collect();
    pending.sort();
    let expected: Vec<String> = (1..=200).map(|i| format!("{i:064}")).collect();
    assert_eq!(pending, expected);
    // AND the redelivery was all duplicates
    let emf: serde_json::Value = serde_json::from_str(&metrics.to_json(0))?;
    assert_eq!(emf["Duplicates"].as_u64(), Some(255));
    assert_eq!(emf["Applied"].as_u64(), Some(0));
    Ok(())
}

#[tokio::test]
async fn kpl_aggregated_records_carry_their_sub_sequence_numbers_into_dynamodb_and_the_dlq(
) -> anyhow::Result<()> {
    let Some(endpoint) = lago::aws::moto_endpoint(
        "kpl_aggregated_records_carry_their_sub_sequence_numbers_into_dynamodb_and_the_dlq",
    ) else {
        return Ok(());
    };
    // GIVEN the fixture's ten records packed into two KPL aggregates of five
    let moto = Moto::create(&endpoint, "kpl").await?;
    let stream = moto.stream();
    let event = serde_json::from_str::<KinesisTradeEvent>(FIXTURE)?.aggregated(5);
    let (first, second) = (
        event.records[0].kinesis.sequence_number.clone(),
        event.records[1].kinesis.sequence_number.clone(),
    );

    // WHEN they are handled on the real clients
    let (result, _) = stream.handle(&event, now()).await;
    assert!(result?.batch_item_failures.is_empty());

    // THEN each decision item names its aggregate and its place in it
    let decisions = moto.scan(&moto.config.decisions_table).await?;
    let mut placed: Vec<(String, String, String)> = decisions
        .iter()
        .map(|d| {
            (
                s(d, "trade_id").unwrap_or_default(),
                s(d, "sequence_number").unwrap_or_default(),
                n(d, "sub_sequence_number").unwrap_or_default(),
            )
        })
        .collect();
    placed.sort();
    assert_eq!(placed.len(), 7);
    assert!(placed.contains(&("trd-20261128-000001".into(), first.clone(), "0".into())));
    assert!(placed.contains(&("trd-20261128-000007".into(), second.clone(), "1".into())));
    // AND each dead letter too
    let mut letters: Vec<(String, String, u64)> = Vec::new();
    for (body, _) in moto.drain(&moto.config.dead_letter_queue_url).await? {
        let v: serde_json::Value = serde_json::from_str(&body)?;
        letters.push((
            v["reason"].as_str().unwrap_or_default().to_string(),
            v["sequence_number"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            v["sub_sequence_number"].as_u64().unwrap_or(u64::MAX),
        ));
    }
    letters.sort();
    assert_eq!(
        letters,
        [
            ("insufficient_balance".to_string(), second.clone(), 1),
            ("invalid_field:usd_amount".to_string(), second, 3),
            ("invalid_json".to_string(), first, 4),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn decision_conditions_redo_only_pending_decisions_not_yet_durable() -> anyhow::Result<()> {
    let Some(endpoint) =
        lago::aws::moto_endpoint("decision_conditions_redo_only_pending_decisions_not_yet_durable")
    else {
        return Ok(());
    };
    let moto = Moto::create(&endpoint, "conditions").await?;
    let store = DynamoDbPortfolioStore::new(
        moto.clients.dynamodb.clone(),
        &moto.config.portfolios_table,
        &moto.config.decisions_table,
    );
    let lines: Vec<String> = (1..=9).map(|i| buy_line(&format!("t{i}"), "ana")).collect();
    let trades: Vec<Trade> = lines
        .iter()
        .map(|l| Trade::parse(l.as_bytes()))
        .collect::<Result<_, _>>()?;
    let seqs: Vec<String> = (1..=9).map(|i| format!("{i:056}")).collect();
    let mut portfolio = Portfolio::new("ana");
    let mut decisions = Vec::new();
    for (t, seq) in trades.iter().zip(&seqs) {
        decisions.push(Decision {
            trade: t,
            sequence_number: seq,
            sub_sequence: None,
            outcome: DecisionOutcome::Applied(portfolio.apply(t)?),
        });
    }
    let last = |range: &std::ops::Range<usize>| seqs[range.end - 1].as_str();
    let send = |pending: bool,
                expected_version: u64,
                expected_sequence: Option<String>,
                range: std::ops::Range<usize>| {
        let store = &store;
        let decisions = &decisions;
        let portfolio = &portfolio;
        let last_sequence = last(&range).to_string();
        async move {
            store
                .commit(&Commit {
                    user_id: "ana",
                    expected_version,
                    expected_sequence: expected_sequence.as_deref(),
                    pending,
                    portfolio,
                    last_sequence: &last_sequence,
                    decisions: &decisions[range],
                })
                .await
        }
    };

    // GIVEN a pending transaction of t1–t3 whose final transaction never landed
    assert_eq!(send(true, 0, None, 0..3).await?, CommitOutcome::Committed);
    assert!(moto.portfolio_item("ana").await?.is_none());
    // WHEN a retry writes t1–t5 with its final transaction
    // THEN the pending t1–t3 are written again, and the portfolio stores t5's sequence number
    assert_eq!(send(false, 0, None, 0..5).await?, CommitOutcome::Committed);
    let stored = portfolio_from_item(&moto.portfolio_item("ana").await?.context("ana")?)?;
    assert_eq!(stored.version, 1);
    assert_eq!(stored.last_sequence, Some(sequence_key(&seqs[4])));
    let read = stored.last_sequence.clone();

    // WHEN t2 (decided by a final transaction) is written again
    // THEN it is refused as already decided
    match send(true, 1, read.clone(), 1..2).await? {
        CommitOutcome::Conflict(c) => assert_eq!(c.already_decided, ["t2"]),
        other => bail!("t2 written twice: {other:?}"),
    }
    // GIVEN t6–t7 pending and t8 final, all landed
    assert_eq!(
        send(true, 1, read.clone(), 5..7).await?,
        CommitOutcome::Committed
    );
    assert_eq!(
        send(false, 1, read.clone(), 7..8).await?,
        CommitOutcome::Committed
    );
    let read =
        portfolio_from_item(&moto.portfolio_item("ana").await?.context("ana")?)?.last_sequence;
    // WHEN the pending t6 comes again after its final transaction landed
    // THEN it is durable: refused
    match send(true, 2, read.clone(), 5..6).await? {
        CommitOutcome::Conflict(c) => assert_eq!(c.already_decided, ["t6"]),
        other => bail!("t6 written twice: {other:?}"),
    }
    // AND a stale version is refused on the portfolio
    match send(false, 1, read.clone(), 8..9).await? {
        CommitOutcome::Conflict(c) => assert!(c.version_moved && c.already_decided.is_empty()),
        other => bail!("a stale version was written: {other:?}"),
    }
    Ok(())
}

/// A one-shard Kinesis stream in moto; its ARN.
async fn kinesis_stream(kinesis: &aws_sdk_kinesis::Client, name: &str) -> anyhow::Result<String> {
    kinesis
        .create_stream()
        .stream_name(name)
        .shard_count(1)
        .send()
        .await?;
    let summary = kinesis
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await?;
    Ok(summary
        .stream_description_summary()
        .context("a stream summary")?
        .stream_arn()
        .to_string())
}

/// Puts `(partition key, data)` records on the stream in order; their sequence numbers.
async fn put_records(
    kinesis: &aws_sdk_kinesis::Client,
    stream_arn: &str,
    records: &[(String, Vec<u8>)],
) -> anyhow::Result<Vec<String>> {
    let mut sequence_numbers = Vec::new();
    for (key, data) in records {
        let put = kinesis
            .put_record()
            .stream_arn(stream_arn)
            .partition_key(key)
            .data(aws_sdk_kinesis::primitives::Blob::new(data.clone()))
            .send()
            .await?;
        sequence_numbers.push(put.sequence_number().to_string());
    }
    Ok(sequence_numbers)
}

#[tokio::test]
async fn a_batch_the_event_source_gave_up_on_is_read_back_from_the_stream_and_applied_once(
) -> anyhow::Result<()> {
    use lago::aws::redrive::{KinesisShardReader, SqsFailureQueue};
    use lambda_runtime::{Context as LambdaContext, LambdaEvent};
    use trades_stream::{Invocation, Redriver, Response};

    let Some(endpoint) = lago::aws::moto_endpoint(module_path!()) else {
        return Ok(());
    };
    // GIVEN a stream holding 300 generated trades (with duplicates and malformed records): the
    // event source gave up on trades 100–249 (the last 20 of them in one KPL aggregate) and
    // recorded the batch on the on-failure queue, with the sequence numbers that bound it
    let moto = Moto::create(&endpoint, "redrive").await?;
    let kinesis = aws_sdk_kinesis::Client::new(&moto.sdk);
    let stream_arn =
        kinesis_stream(&kinesis, &format!("{}-trades", moto.config.lake_bucket)).await?;
    let mut ndjson = Vec::new();
    generate_trades(
        &TradeGenerateOptions {
            trades: 300,
            users: 20,
            seed: 23,
            dirty_pct: 5.0,
            span_days: 0,
        },
        &mut ndjson,
    )?;
    let text = String::from_utf8(ndjson)?;
    let lines: Vec<&str> = text.lines().collect();
    let key = |line: &str| {
        Trade::parse(line.as_bytes())
            .map_or_else(|_| "malformed".to_string(), |t| t.user_id.to_string())
    };
    let mut records: Vec<(String, Vec<u8>)> = lines[..230]
        .iter()
        .map(|l| (key(l), l.as_bytes().to_vec()))
        .collect();
    let aggregated_keys: Vec<String> = lines[230..250].iter().map(|l| key(l)).collect();
    records.push((
        key(lines[230]),
        lago::trades::kpl::aggregate(
            aggregated_keys
                .iter()
                .zip(&lines[230..250])
                .map(|(k, l)| (k.as_str(), l.as_bytes())),
        ),
    ));
    records.extend(lines[250..].iter().map(|l| (key(l), l.as_bytes().to_vec())));
    let sequence_numbers = put_records(&kinesis, &stream_arn, &records).await?;
    let failure = serde_json::json!({
        "requestContext": {"requestId": "7c1f0e3a", "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:trades-stream", "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 12},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": Utc::now().to_rfc3339(),
        "KinesisBatchInfo": {
            "shardId": "shardId-000000000000",
            "startSequenceNumber": sequence_numbers[100],
            "endSequenceNumber": sequence_numbers[230],
            "approximateArrivalOfFirstRecord": (Utc::now() - chrono::Duration::hours(2)).to_rfc3339(),
            "approximateArrivalOfLastRecord": Utc::now().to_rfc3339(),
            "batchSize": 131,
            "streamArn": stream_arn,
        }
    })
    .to_string();
    let failures_url = moto
        .clients
        .sqs
        .create_queue()
        .queue_name(format!("{}-stream-failures", moto.config.lake_bucket))
        .send()
        .await?
        .queue_url
        .context("a queue URL")?;
    for body in [failure.as_str(), "{\"not\": \"a failure record\"}"] {
        moto.clients
            .sqs
            .send_message()
            .queue_url(&failures_url)
            .message_body(body)
            .send()
            .await?;
    }
    let stream = moto.stream();
    let redriver = Redriver {
        queue: SqsFailureQueue::new(moto.clients.sqs.clone(), &failures_url),
        reader: KinesisShardReader::from_sdk(&moto.sdk),
        retention_hours: 24,
    };
    let redrive = |dry_run: bool| {
        let invocation = Invocation {
            action: Some("redrive".into()),
            dry_run: Some(dry_run),
            ..Invocation::default()
        };
        let stream = &stream;
        let redriver = &redriver;
        async move {
            match stream
                .invoke(
                    LambdaEvent::new(invocation, LambdaContext::default()),
                    Some(redriver),
                )
                .await?
            {
                Response::Redrive(report) => anyhow::Ok(serde_json::to_value(report)?),
                Response::Batch(_) => bail!("a redrive answered as a batch"),
            }
        }
    };
    // The same 150 trades, one per record, through the in-memory twin.
    let twin = TradeStream::new(
        TradeProcessor::new(MemoryPortfolioStore::new()),
        RecordingArchive::new(),
        RecordingDeadLetters::new(),
        RecordingNotifier::new(),
    );
    let delivered = batches(&lines[100..250], 150)?.remove(0);
    let (result, _, twin_counts) = twin.handle_counted(&delivered, now(), None).await;
    result?;

    // WHEN a dry run looks at the queue
    let dry = redrive(true).await?;
    // THEN it reads the 131 Kinesis records of the range back, applies nothing and keeps both
    // messages; it says how long the stream still holds the batch (24 h retention, 2 h old)
    assert_eq!(
        (dry["would_redrive"].as_u64(), dry["unreadable"].as_u64()),
        (Some(1), Some(1)),
        "{dry}"
    );
    assert_eq!(dry["items"], 131, "{dry}");
    let hours_left = dry["details"][0]["subject"]["hours_left"]
        .as_f64()
        .unwrap_or_default();
    assert!((21.9..=22.0).contains(&hours_left), "{dry}");
    assert!(moto.scan(&moto.config.portfolios_table).await?.is_empty());
    assert_eq!(moto.queue_depth(&failures_url).await?, 2);

    // WHEN it is redriven
    let first = redrive(false).await?;
    // THEN exactly the batch's trades are applied (not those before or after it), the
    // aggregate's included, DynamoDB holds the twin's portfolios, and the record is deleted
    assert_eq!(first["redriven"], 1, "{first}");
    assert_eq!(
        first["items"].as_u64(),
        Some(twin_counts.records),
        "{first}"
    );
    assert_eq!(
        first["items_already_done"].as_u64(),
        Some(twin_counts.duplicates),
        "{first}"
    );
    let compare = || async {
        let items = moto.scan(&moto.config.portfolios_table).await?;
        assert!(!items.is_empty());
        for item in &items {
            let stored = portfolio_from_item(item)?;
            let expected = twin
                .processor()
                .store()
                .portfolio(&stored.portfolio.user_id)
                .context("the twin has the user")?;
            // Everything but when it was written and the stream position it came from (the
            // twin's records are numbered from 1, the stream's are Kinesis's).
            let when_aside = |p: &Portfolio| Portfolio {
                updated_at: None,
                ..p.clone()
            };
            assert_eq!(
                when_aside(&stored.portfolio),
                when_aside(&expected.portfolio),
                "{}",
                stored.portfolio.user_id
            );
            assert_eq!(stored.version, expected.version);
        }
        anyhow::Ok(items.len())
    };
    let users = compare().await?;
    assert_eq!(moto.queue_depth(&failures_url).await?, 1);

    // WHEN the same batch is recorded and redriven again
    moto.clients
        .sqs
        .send_message()
        .queue_url(&failures_url)
        .message_body(&failure)
        .send()
        .await?;
    let second = redrive(false).await?;
    // THEN every trade decided before is a duplicate (as for the twin delivered the same batch
    // again) and nothing changes
    let (_, _, twin_again) = twin.handle_counted(&delivered, now(), None).await;
    assert_eq!(twin_again.applied, 0);
    assert_eq!(second["redriven"], 1, "{second}");
    assert_eq!(
        second["items_already_done"].as_u64(),
        Some(twin_again.duplicates),
        "{second}"
    );
    assert_eq!(compare().await?, users);
    // AND the message that is no on-failure record is still there, for someone to look at
    assert_eq!(second["unreadable"], 1, "{second}");
    assert_eq!(moto.queue_depth(&failures_url).await?, 1);
    Ok(())
}
