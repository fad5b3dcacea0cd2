//! The Kinesis event as this function reads it.
//!
//! `aws_lambda_events::kinesis::KinesisEvent` decodes each record's base64 `data` while
//! deserializing, so one bad record would fail the whole invocation and block the shard. Here
//! `data` stays text and the processor decodes it per record: bad base64 becomes a dead letter
//! like any other invalid record. Every field is optional so no record shape can fail the batch.

use chrono::{DateTime, Utc};
use lago::trades::{Record, RecordData};
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
    /// The records for the processor, in stream order, borrowing the event.
    pub fn records(&self) -> Vec<Record<'_>> {
        self.records
            .iter()
            .map(|r| Record {
                shard_id: r.shard_id(),
                sequence_number: &r.kinesis.sequence_number,
                data: RecordData::Base64(&r.kinesis.data),
                arrived_at: r.kinesis.arrived_at(),
            })
            .collect()
    }

    /// The shard of the batch (an event source mapping batch is from one shard).
    pub fn shard_id(&self) -> &str {
        self.records
            .first()
            .map_or(UNKNOWN_SHARD, KinesisTradeRecord::shard_id)
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
        let records = event.records();
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
        let arrivals: Vec<_> = event.records().iter().map(|r| r.arrived_at).collect();
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
}
