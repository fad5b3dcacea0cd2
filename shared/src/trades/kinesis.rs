//! The Kinesis event as the trades-stream function receives it (`{"Records": [...]}`), and
//! its records for the processor — KPL-aggregated ones expanded into their user records.
//!
//! `aws_lambda_events::kinesis::KinesisEvent` decodes each record's base64 `data` while
//! deserializing, so one bad record would fail the whole invocation and block the shard. Here
//! `data` stays text and the processor decodes it per record: bad base64 becomes a dead letter
//! like any other invalid record. Every field is optional so no record shape can fail the batch.
//!
//! A record whose data starts with the KPL magic ([`kpl::MAGIC`]) is decoded here, once, and
//! becomes one processor record per user record, each with the Kinesis record's sequence number
//! and its own sub-sequence number; an aggregate that cannot be read (digest, body) becomes one
//! dead letter with its reason and its data whole. `lago trades replay --kinesis-event` reads
//! events through the same code.

use super::kpl::{self, KplError, Layout};
use super::processor::{Record, RecordData};
use super::trade::InvalidReason;
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// A Kinesis event source batch (`{"Records": [...]}`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KinesisTradeEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<KinesisTradeRecord>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct KinesisTradeRecord {
    /// `shardId-000000000000:49590338271490256608559692538361571095921575989136588898`.
    #[serde(rename = "eventID", default)]
    pub event_id: String,
    #[serde(rename = "eventSourceARN", default)]
    pub event_source_arn: String,
    #[serde(default)]
    pub kinesis: KinesisData,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KinesisData {
    /// The record's bytes, base64 encoded by Kinesis.
    #[serde(default)]
    pub data: String,
    #[serde(default)]
    pub sequence_number: String,
    #[serde(default)]
    pub partition_key: String,
    /// Seconds since the epoch, with a fraction (`1764349200.123`). Kept as JSON so that an
    /// unexpected shape loses only the arrival time, never the record.
    #[serde(default)]
    pub approximate_arrival_timestamp: Option<serde_json::Value>,
}

impl KinesisData {
    /// The approximate arrival time, to the millisecond, when it is a number of seconds.
    pub fn arrived_at(&self) -> Option<DateTime<Utc>> {
        let seconds = self.approximate_arrival_timestamp.as_ref()?.as_f64()?;
        let millis = (seconds * 1000.0).round();
        // Anything chrono cannot represent (or not a finite number) has no arrival time.
        if !millis.is_finite() || millis.abs() > 8.0e15 {
            return None;
        }
        DateTime::from_timestamp_millis(millis as i64)
    }
}

/// The shard of records whose `eventID` does not say.
pub const UNKNOWN_SHARD: &str = "shardId-unknown";

impl KinesisTradeRecord {
    /// The shard id: the part of `eventID` before the `:`.
    pub fn shard_id(&self) -> &str {
        match self.event_id.split_once(':') {
            Some((shard, _)) if !shard.is_empty() => shard,
            _ => UNKNOWN_SHARD,
        }
    }
}

impl KinesisTradeEvent {
    /// The records of a shard read back from the stream (a redrive), as the event source would
    /// have delivered them: the same event ids, sequence numbers, partition keys, data and
    /// arrival times.
    pub fn from_shard_records(
        stream_arn: &str,
        shard_id: &str,
        records: &[crate::redrive::ShardRecord],
    ) -> KinesisTradeEvent {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        KinesisTradeEvent {
            records: records
                .iter()
                .map(|r| KinesisTradeRecord {
                    event_id: format!("{shard_id}:{}", r.sequence_number),
                    event_source_arn: stream_arn.to_string(),
                    kinesis: KinesisData {
                        data: b64.encode(&r.data),
                        sequence_number: r.sequence_number.clone(),
                        partition_key: r.partition_key.clone(),
                        approximate_arrival_timestamp: r.arrived_at.and_then(|t| {
                            serde_json::Number::from_f64(t.timestamp_millis() as f64 / 1000.0)
                                .map(serde_json::Value::Number)
                        }),
                    },
                })
                .collect(),
        }
    }

    /// The same records as a KPL producer would send them: `per` user records to an aggregated
    /// record, which keeps the identity (event id, sequence number, arrival) of its first one.
    /// A record whose data is not base64 goes in as its text.
    pub fn aggregated(&self, per: usize) -> KinesisTradeEvent {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let records = self
            .records
            .chunks(per.max(1))
            .map(|chunk| {
                let data: Vec<Vec<u8>> = chunk
                    .iter()
                    .map(|r| {
                        b64.decode(&r.kinesis.data)
                            .unwrap_or_else(|_| r.kinesis.data.clone().into_bytes())
                    })
                    .collect();
                let users = chunk
                    .iter()
                    .zip(&data)
                    .map(|(r, d)| (r.kinesis.partition_key.as_str(), d.as_slice()));
                let mut first = chunk[0].clone();
                first.kinesis.data = b64.encode(kpl::aggregate(users));
                first
            })
            .collect();
        KinesisTradeEvent { records }
    }

    /// Decodes the batch's KPL aggregates (the other records stay base64 text, decoded by the
    /// processor record by record).
    pub fn expand(&self) -> Expanded {
        Expanded {
            aggregates: self
                .records
                .iter()
                .map(|r| Aggregate::of(&r.kinesis.data))
                .collect(),
        }
    }

    /// The shard of the batch (an event source mapping batch is from one shard).
    pub fn shard_id(&self) -> &str {
        self.records
            .first()
            .map_or(UNKNOWN_SHARD, KinesisTradeRecord::shard_id)
    }
}

/// A KPL aggregate of the batch, decoded.
#[derive(Debug)]
struct Aggregate {
    bytes: Vec<u8>,
    layout: Result<Layout, KplError>,
    /// The refusal's detail, kept for the dead letter to borrow.
    detail: String,
}

impl Aggregate {
    /// `Some` when `data` is the base64 of a record that starts with the KPL magic.
    fn of(data: &str) -> Option<Aggregate> {
        use base64::Engine as _;
        if !data.starts_with(kpl::BASE64_PREFIX) {
            return None;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()?;
        if !kpl::is_aggregated(&bytes) {
            return None;
        }
        let layout = kpl::layout(&bytes);
        let detail = match &layout {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        };
        Some(Aggregate {
            bytes,
            layout,
            detail,
        })
    }
}

/// The batch with its KPL aggregates decoded; [`Expanded::records`] gives the processor's
/// records.
#[derive(Debug)]
pub struct Expanded {
    /// One entry per Kinesis record: `Some` for an aggregate.
    aggregates: Vec<Option<Aggregate>>,
}

impl Expanded {
    /// The records for the processor, in stream order (a user record after the one before it
    /// in its aggregate), borrowing the event and this expansion.
    pub fn records<'a>(&'a self, event: &'a KinesisTradeEvent) -> Vec<Record<'a>> {
        let mut out = Vec::with_capacity(event.records.len());
        for (r, agg) in event.records.iter().zip(&self.aggregates) {
            let record = |sub_sequence, data| Record {
                shard_id: r.shard_id(),
                sequence_number: &r.kinesis.sequence_number,
                sub_sequence,
                data,
                arrived_at: r.kinesis.arrived_at(),
            };
            match agg {
                None => out.push(record(None, RecordData::Base64(&r.kinesis.data))),
                Some(Aggregate {
                    bytes,
                    layout: Ok(layout),
                    ..
                }) => out.extend(layout.data_ranges().enumerate().map(|(i, range)| {
                    let sub = u32::try_from(i).unwrap_or(u32::MAX);
                    record(Some(sub), RecordData::Bytes(&bytes[range]))
                })),
                Some(Aggregate {
                    layout: Err(e),
                    detail,
                    ..
                }) => out.push(record(
                    None,
                    RecordData::Refused {
                        reason: InvalidReason::Kpl(e.code()),
                        detail,
                        base64: &r.kinesis.data,
                    },
                )),
            }
        }
        out
    }

    /// User records in the batch (a record sent alone counts one).
    pub fn user_records(&self) -> usize {
        self.aggregates
            .iter()
            .map(|a| match a {
                Some(Aggregate { layout: Ok(l), .. }) => l.len(),
                _ => 1,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_that_is_barely_there_still_reads() -> Result<(), serde_json::Error> {
        let event: KinesisTradeEvent = serde_json::from_str(
            r#"{"Records": [{"kinesis": {"data": "!!", "sequenceNumber": "7"}}, {}]}"#,
        )?;
        let expanded = event.expand();
        let records = expanded.records(&event);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].shard_id, UNKNOWN_SHARD);
        assert_eq!(records[0].sequence_number, "7");
        assert!(matches!(records[0].data, RecordData::Base64("!!")));
        assert_eq!(records[0].arrived_at, None);
        Ok(())
    }

    #[test]
    fn the_arrival_time_is_read_to_the_millisecond_and_never_fails_a_record(
    ) -> Result<(), serde_json::Error> {
        let event: KinesisTradeEvent = serde_json::from_str(
            r#"{"Records": [
                {"kinesis": {"approximateArrivalTimestamp": 1795971600.125}},
                {"kinesis": {"approximateArrivalTimestamp": "yesterday"}},
                {"kinesis": {"approximateArrivalTimestamp": 1e300}}
            ]}"#,
        )?;
        let expanded = event.expand();
        let arrivals: Vec<_> = expanded
            .records(&event)
            .iter()
            .map(|r| r.arrived_at)
            .collect();
        assert_eq!(
            arrivals,
            vec![
                DateTime::from_timestamp_millis(1_795_971_600_125),
                None,
                None
            ]
        );
        Ok(())
    }

    #[test]
    fn the_shard_comes_from_the_event_id() -> Result<(), serde_json::Error> {
        let event: KinesisTradeEvent = serde_json::from_str(
            r#"{"Records": [{"eventID": "shardId-000000000003:4959", "kinesis": {}}]}"#,
        )?;
        assert_eq!(event.shard_id(), "shardId-000000000003");
        Ok(())
    }

    fn event_with(data: &[String]) -> Result<KinesisTradeEvent, serde_json::Error> {
        let records: Vec<serde_json::Value> = data
            .iter()
            .enumerate()
            .map(|(i, d)| {
                serde_json::json!({"eventID": format!("shardId-000000000001:{i}"),
                    "kinesis": {"data": d, "sequenceNumber": format!("{}", 100 + i)}})
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records }))
    }

    #[test]
    fn an_aggregate_becomes_its_user_records_with_sub_sequence_numbers(
    ) -> Result<(), serde_json::Error> {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let agg = kpl::aggregate([("u1", &b"{\"a\":1}"[..]), ("u2", &b"{\"b\":2}"[..])]);
        let mut broken = agg.clone();
        let last = broken.len() - 1;
        broken[last] ^= 1;
        let event = event_with(&[b64(b"{}"), b64(&agg), b64(&broken)])?;
        let expanded = event.expand();
        let records = expanded.records(&event);
        assert_eq!(expanded.user_records(), 4);
        let seen: Vec<(&str, Option<u32>)> = records
            .iter()
            .map(|r| (r.sequence_number, r.sub_sequence))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("100", None),
                ("101", Some(0)),
                ("101", Some(1)),
                ("102", None)
            ]
        );
        assert!(matches!(records[1].data, RecordData::Bytes(b"{\"a\":1}")));
        assert!(matches!(records[2].data, RecordData::Bytes(b"{\"b\":2}")));
        let RecordData::Refused { reason, base64, .. } = records[3].data else {
            panic!("the broken aggregate is not refused");
        };
        assert_eq!(reason.to_string(), "kpl_digest_mismatch");
        assert_eq!(base64, b64(&broken));
        Ok(())
    }
}
