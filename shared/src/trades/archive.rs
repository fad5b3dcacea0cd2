//! The lake's raw trade archive: where a batch's valid trades go, with what the processor
//! decided for each, and how they are encoded. Shared by the S3 adapter and the local folder
//! adapter so both write the same objects.
//!
//! One line per valid record, in stream order: the trade's own fields, then `status`
//! (`applied`, `rejected`, or `duplicate` for a trade id decided before — by an earlier batch
//! or earlier in this one), `reason` (the rejection code, empty otherwise), the Kinesis
//! `sequence_number` and `arrived_at` (the record's approximate arrival time, when the event
//! gives it).

use std::borrow::Cow;
use std::io::Write;

use chrono::{DateTime, Datelike, Utc};
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};

use super::trade::{Interner, InvalidTrade, Trade};

/// What the processor decided for an archived trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveStatus {
    /// Applied to the portfolio by this record.
    Applied,
    /// Decided as a rejection by this record (`reason` says why).
    Rejected,
    /// Its trade id was already decided; this record changed nothing.
    Duplicate,
}

impl ArchiveStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveStatus::Applied => "applied",
            ArchiveStatus::Rejected => "rejected",
            ArchiveStatus::Duplicate => "duplicate",
        }
    }
}

/// One archive line: a valid record's trade and its decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchivedTrade {
    #[serde(flatten)]
    pub trade: Trade,
    pub status: ArchiveStatus,
    /// The rejection code (`insufficient_balance`); empty unless `status` is `rejected`.
    pub reason: Cow<'static, str>,
    pub sequence_number: String,
    /// The user record's index within its KPL aggregate (absent for a record sent alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_sequence_number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrived_at: Option<DateTime<Utc>>,
}

impl ArchivedTrade {
    /// Reads one archive line back (the trade validated as [`Trade::parse`] does); strings
    /// that repeat (user ids, channels) are shared through `interner`.
    pub(crate) fn parse(line: &[u8], interner: &mut Interner) -> Result<Self, InvalidTrade> {
        let (trade, fields) = Trade::parse_archived(line, interner)?;
        Ok(ArchivedTrade {
            trade,
            status: fields.status,
            reason: Cow::Owned(fields.reason),
            sequence_number: fields.sequence_number,
            // The history orders and deduplicates by trade id and line, not by it.
            sub_sequence_number: None,
            arrived_at: fields.arrived_at,
        })
    }
}

/// `raw/trades/year=YYYY/month=MM/day=DD/<shard>-<first seq>-<last seq>-<decisions>.ndjson.gz`
/// for a batch starting at `first_sequence` that archives `lines`; `None` when there is none.
///
/// Deterministic from the batch's identity so a retried batch overwrites its object instead of
/// adding one: the first record's sequence number, the last archived one, and `<decisions>`, 8
/// hex digits of a hash of every line's sequence number, status and reason — so a retry that
/// decides nothing new (its trades are now duplicates) writes a second object beside the first
/// instead of overwriting the decisions with duplicates. The date is the first archived trade's
/// `executed_at` (UTC), not the wall clock, for the same reason. Characters outside
/// `[A-Za-z0-9_.-]` in the shard id or sequence numbers are replaced by `_` so a key can never
/// escape its prefix.
pub fn archive_key(
    shard_id: &str,
    first_sequence: &str,
    lines: &[ArchivedTrade],
) -> Option<String> {
    let (first, last) = (lines.first()?, lines.last()?);
    let date = first.trade.executed_at;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for l in lines {
        h.update(l.sequence_number.as_bytes());
        h.update(&[0, l.status as u8]);
        h.update(l.reason.as_bytes());
        h.update(&[0]);
    }
    Some(format!(
        "raw/trades/year={:04}/month={:02}/day={:02}/{}-{}-{}-{:08x}.ndjson.gz",
        date.year(),
        date.month(),
        date.day(),
        safe(shard_id),
        safe(first_sequence),
        safe(&last.sequence_number),
        h.digest() as u32,
    ))
}

fn safe(part: &str) -> String {
    let cleaned: String = part
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        "_".to_string()
    } else {
        cleaned
    }
}

/// The archived trades as gzip'd NDJSON, one line each, in order. The gzip header carries no
/// timestamp, so the same batch always gives the same bytes.
pub fn encode_ndjson_gz(trades: &[ArchivedTrade]) -> std::io::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::with_capacity(trades.len() * 96), Compression::fast());
    for trade in trades {
        serde_json::to_writer(&mut gz, trade)?;
        gz.write_all(b"\n")?;
    }
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn text_lines(gz: &[u8]) -> std::io::Result<Vec<String>> {
        let mut text = String::new();
        GzDecoder::new(gz).read_to_string(&mut text)?;
        Ok(text.lines().map(str::to_string).collect())
    }

    #[test]
    fn a_line_without_a_valid_decision_is_invalid() {
        let mut interner = Interner::default();
        let trade = r#""trade_id":"t","user_id":"u","side":"BUY","usd_amount":"1.50","rate":"4000","executed_at":"2026-11-28T17:00:00Z""#;
        for (line, code) in [
            (format!("{{{trade}}}"), "missing_field:status"),
            (
                format!(r#"{{{trade},"status":"lost"}}"#),
                "invalid_field:status",
            ),
            (format!(r#"{{{trade},"status":1}}"#), "invalid_field:status"),
            (
                format!(r#"{{{trade},"status":"applied","reason":3}}"#),
                "invalid_field:reason",
            ),
            (
                format!(r#"{{{trade},"status":"applied","arrived_at":"soon"}}"#),
                "invalid_field:arrived_at",
            ),
            (
                r#"{"status":"applied"}"#.to_string(),
                "missing_field:trade_id",
            ),
        ] {
            let got = ArchivedTrade::parse(line.as_bytes(), &mut interner).map_err(|e| e.code());
            assert_eq!(got.err().as_deref(), Some(code), "{line}");
        }
    }

    fn archived(seq: &str, status: ArchiveStatus, at: DateTime<Utc>) -> ArchivedTrade {
        let json = format!(
            r#"{{"trade_id":"t{seq}","user_id":"u","side":"BUY","usd_amount":"1","rate":"4000","executed_at":"{}"}}"#,
            at.to_rfc3339()
        );
        ArchivedTrade {
            trade: Trade::parse(json.as_bytes()).unwrap(),
            status,
            reason: "".into(),
            sequence_number: seq.into(),
            sub_sequence_number: None,
            arrived_at: None,
        }
    }

    #[test]
    fn key_is_partitioned_by_the_trade_date_and_named_by_the_batch_and_its_decisions() {
        let when = Utc.with_ymd_and_hms(2026, 1, 5, 23, 59, 0).unwrap();
        let lines = [
            archived("0001", ArchiveStatus::Applied, when),
            archived("0042", ArchiveStatus::Applied, when),
        ];
        let key = archive_key("shardId-000000000000", "0001", &lines).unwrap();
        assert!(
            key.starts_with("raw/trades/year=2026/month=01/day=05/shardId-000000000000-0001-0042-"),
            "{key}"
        );
        assert!(key.ends_with(".ndjson.gz"));
        // the same batch decided the same way: the same key
        assert_eq!(
            archive_key("shardId-000000000000", "0001", &lines.clone()),
            Some(key.clone())
        );
        // its retry, now all duplicates: another object
        let retried = lines.clone().map(|mut l| {
            l.status = ArchiveStatus::Duplicate;
            l
        });
        let other = archive_key("shardId-000000000000", "0001", &retried).unwrap();
        assert_ne!(other, key);
        assert_eq!(other.len(), key.len());
        // nothing archived: no key; hostile ids stay inside the prefix
        assert_eq!(archive_key("s", "1", &[]), None);
        let hostile =
            archive_key("../x", "1/2", &[archived("", ArchiveStatus::Applied, when)]).unwrap();
        assert!(
            hostile.starts_with("raw/trades/year=2026/month=01/day=05/.._x-1_2-_-"),
            "{hostile}"
        );
    }

    #[test]
    fn encoding_is_deterministic_and_carries_the_decision() -> Result<(), Box<dyn std::error::Error>>
    {
        let line = r#"{"trade_id":"t","user_id":"u","side":"BUY","usd_amount":"1.50","rate":"4000.0000","executed_at":"2026-11-28T17:00:00Z"}"#;
        let trade = Trade::parse(line.as_bytes())?;
        let batch = [
            ArchivedTrade {
                trade: trade.clone(),
                status: ArchiveStatus::Applied,
                reason: "".into(),
                sequence_number: "0001".into(),
                sub_sequence_number: None,
                arrived_at: Some(Utc.with_ymd_and_hms(2026, 11, 28, 17, 0, 1).unwrap()),
            },
            ArchivedTrade {
                trade,
                status: ArchiveStatus::Rejected,
                reason: "insufficient_balance".into(),
                sequence_number: "0002".into(),
                sub_sequence_number: None,
                arrived_at: None,
            },
        ];
        let a = encode_ndjson_gz(&batch)?;
        assert_eq!(a, encode_ndjson_gz(&batch.clone())?);
        // AND each line reads back as it was written
        let mut interner = Interner::default();
        for (line, want) in text_lines(&a)?.iter().zip(&batch) {
            assert_eq!(&ArchivedTrade::parse(line.as_bytes(), &mut interner)?, want);
        }
        let mut text = String::new();
        GzDecoder::new(&a[..]).read_to_string(&mut text)?;
        let fields = &line[..line.len() - 1];
        assert_eq!(
            text,
            format!(
                "{fields},\"status\":\"applied\",\"reason\":\"\",\"sequence_number\":\"0001\",\"arrived_at\":\"2026-11-28T17:00:01Z\"}}\n\
                 {fields},\"status\":\"rejected\",\"reason\":\"insufficient_balance\",\"sequence_number\":\"0002\"}}\n"
            )
        );
        Ok(())
    }
}
