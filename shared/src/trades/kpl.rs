//! Kinesis records aggregated by the Kinesis Producer Library (KPL) and the libraries that write
//! its format: many *user records* in one Kinesis record, to fit more trades per PutRecords call.
//!
//! An aggregated record is the magic `F3 89 9A C2`, then a protobuf `AggregatedRecord`, then the
//! MD5 digest of that protobuf body (16 bytes):
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;   // ignored
//! }
//! ```
//!
//! [`deaggregate`] checks the digest before reading anything, and refuses (with a reason, for the
//! dead letter) a body that is not that message, an index outside its table, or an aggregate
//! with no user record at all — such a record carries no trade, and would otherwise vanish.
//! User record `i` is the record's *sub-sequence number* `i`.

use std::ops::Range;

use md5::{Digest as _, Md5};

/// The first four bytes of every aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// How the base64 text of an aggregated record starts (the magic's first three bytes).
pub const BASE64_PREFIX: &str = "84ma";
const DIGEST_LEN: usize = 16;
/// The protobuf nesting and size bounds this reader accepts: far above what the KPL writes
/// (a Kinesis record is at most 1 MiB), low enough that no input makes it work unboundedly.
const MAX_USER_RECORDS: usize = 1 << 20;

/// Why an aggregated record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KplError {
    #[error("the record is {0} bytes, too short for an aggregated record (magic and digest: 20)")]
    TooShort(usize),
    #[error("the MD5 of the aggregated body is {found}, the record says {expected}")]
    DigestMismatch { expected: String, found: String },
    #[error("the aggregated body is not a KPL AggregatedRecord: {0}")]
    Malformed(String),
    #[error("the aggregated record holds no user record")]
    Empty,
}

impl KplError {
    /// The reason code of the dead letter.
    pub fn code(&self) -> &'static str {
        match self {
            KplError::TooShort(_) | KplError::Malformed(_) => "kpl_malformed",
            KplError::DigestMismatch { .. } => "kpl_digest_mismatch",
            KplError::Empty => "kpl_empty",
        }
    }
}

/// One user record, borrowed from the aggregated record's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRecord<'a> {
    pub partition_key: &'a str,
    pub explicit_hash_key: Option<&'a str>,
    pub data: &'a [u8],
}

/// Where each user record's parts are in the aggregated record's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    partition_keys: Vec<Range<usize>>,
    explicit_hash_keys: Vec<Range<usize>>,
    records: Vec<LaidOut>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LaidOut {
    partition_key: usize,
    explicit_hash_key: Option<usize>,
    data: Range<usize>,
}

impl Layout {
    /// The user records, in order (record `i` has sub-sequence number `i`).
    pub fn data_ranges(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.records.iter().map(|r| r.data.clone())
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The user records of `bytes` (the record this layout was read from).
    pub fn user_records<'a>(&self, bytes: &'a [u8]) -> Vec<UserRecord<'a>> {
        let text = |r: &Range<usize>| std::str::from_utf8(&bytes[r.clone()]).unwrap_or_default();
        self.records
            .iter()
            .map(|r| UserRecord {
                partition_key: text(&self.partition_keys[r.partition_key]),
                explicit_hash_key: r
                    .explicit_hash_key
                    .map(|i| text(&self.explicit_hash_keys[i])),
                data: &bytes[r.data.clone()],
            })
            .collect()
    }
}

/// Whether `bytes` claim to be an aggregated record (start with [`MAGIC`]).
pub fn is_aggregated(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// The user records of an aggregated record.
pub fn deaggregate(bytes: &[u8]) -> Result<Vec<UserRecord<'_>>, KplError> {
    layout(bytes).map(|l| l.user_records(bytes))
}

/// Checks an aggregated record and says where its user records are.
pub fn layout(bytes: &[u8]) -> Result<Layout, KplError> {
    if bytes.len() < MAGIC.len() + DIGEST_LEN || !is_aggregated(bytes) {
        return Err(KplError::TooShort(bytes.len()));
    }
    let body_end = bytes.len() - DIGEST_LEN;
    let body = MAGIC.len()..body_end;
    let found = Md5::digest(&bytes[body.clone()]);
    if found.as_slice() != &bytes[body_end..] {
        return Err(KplError::DigestMismatch {
            expected: hex::encode(&bytes[body_end..]),
            found: hex::encode(found),
        });
    }
    let mut layout = Layout {
        partition_keys: Vec::new(),
        explicit_hash_keys: Vec::new(),
        records: Vec::new(),
    };
    let mut r = Reader {
        bytes,
        at: body.start,
        end: body.end,
    };
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, WIRE_LEN) => layout.partition_keys.push(r.text()?),
            (2, WIRE_LEN) => layout.explicit_hash_keys.push(r.text()?),
            (3, WIRE_LEN) => {
                if layout.records.len() >= MAX_USER_RECORDS {
                    return Err(KplError::Malformed("too many user records".into()));
                }
                let inner = r.len_delimited()?;
                layout.records.push(record(bytes, inner)?);
            }
            _ => r.skip(wire)?,
        }
    }
    for (i, rec) in layout.records.iter().enumerate() {
        if rec.partition_key >= layout.partition_keys.len() {
            return Err(KplError::Malformed(format!(
                "user record {i} names partition key {} of {}",
                rec.partition_key,
                layout.partition_keys.len()
            )));
        }
        if rec
            .explicit_hash_key
            .is_some_and(|k| k >= layout.explicit_hash_keys.len())
        {
            return Err(KplError::Malformed(format!(
                "user record {i} names an explicit hash key outside the table of {}",
                layout.explicit_hash_keys.len()
            )));
        }
    }
    if layout.records.is_empty() {
        return Err(KplError::Empty);
    }
    Ok(layout)
}

/// One `Record` message at `range` of `bytes`.
fn record(bytes: &[u8], range: Range<usize>) -> Result<LaidOut, KplError> {
    let mut r = Reader {
        bytes,
        at: range.start,
        end: range.end,
    };
    let (mut pk, mut ehk, mut data) = (None, None, None);
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, WIRE_VARINT) => pk = Some(r.index()?),
            (2, WIRE_VARINT) => ehk = Some(r.index()?),
            (3, WIRE_LEN) => data = Some(r.len_delimited()?),
            _ => r.skip(wire)?,
        }
    }
    match (pk, data) {
        (Some(partition_key), Some(data)) => Ok(LaidOut {
            partition_key,
            explicit_hash_key: ehk,
            data,
        }),
        (None, _) => Err(KplError::Malformed(
            "a user record without partition_key_index".into(),
        )),
        (_, None) => Err(KplError::Malformed("a user record without data".into())),
    }
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

/// A protobuf reader over `bytes[at..end]` that never reads past `end`.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    end: usize,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.at >= self.end
    }

    fn varint(&mut self) -> Result<u64, KplError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.at).filter(|_| self.at < self.end) else {
                return Err(KplError::Malformed("a varint runs past its message".into()));
            };
            self.at += 1;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(KplError::Malformed("a varint longer than 10 bytes".into()))
    }

    fn key(&mut self) -> Result<(u64, u8), KplError> {
        let k = self.varint()?;
        Ok((k >> 3, (k & 7) as u8))
    }

    fn index(&mut self) -> Result<usize, KplError> {
        usize::try_from(self.varint()?)
            .map_err(|_| KplError::Malformed("an index beyond this machine's range".into()))
    }

    fn len_delimited(&mut self) -> Result<Range<usize>, KplError> {
        let n = self.varint()?;
        let start = self.at;
        match usize::try_from(n).ok().and_then(|n| start.checked_add(n)) {
            Some(end) if end <= self.end => {
                self.at = end;
                Ok(start..end)
            }
            _ => Err(KplError::Malformed(format!(
                "a field of {n} bytes runs past its message"
            ))),
        }
    }

    fn text(&mut self) -> Result<Range<usize>, KplError> {
        let r = self.len_delimited()?;
        std::str::from_utf8(&self.bytes[r.clone()])
            .map_err(|_| KplError::Malformed("a key that is not UTF-8".into()))?;
        Ok(r)
    }

    fn skip(&mut self, wire: u8) -> Result<(), KplError> {
        let n = match wire {
            WIRE_VARINT => return self.varint().map(|_| ()),
            WIRE_LEN => return self.len_delimited().map(|_| ()),
            WIRE_I64 => 8,
            WIRE_I32 => 4,
            other => {
                return Err(KplError::Malformed(format!(
                    "wire type {other} has no place in an AggregatedRecord"
                )))
            }
        };
        if self.end - self.at < n {
            return Err(KplError::Malformed("a field runs past its message".into()));
        }
        self.at += n;
        Ok(())
    }
}

/// Aggregates `(partition key, data)` user records into one record in the KPL's format (one
/// partition key table entry per distinct key, in first-use order).
pub fn aggregate<'a>(records: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut keys: Vec<&str> = Vec::new();
    let mut body = Vec::new();
    let mut encoded_records = Vec::new();
    for (pk, data) in records {
        let index = match keys.iter().position(|k| *k == pk) {
            Some(i) => i,
            None => {
                keys.push(pk);
                keys.len() - 1
            }
        };
        let mut rec = Vec::new();
        put_varint(&mut rec, 1 << 3);
        put_varint(&mut rec, index as u64);
        put_bytes(&mut rec, 3, data);
        put_bytes(&mut encoded_records, 3, &rec);
    }
    for k in &keys {
        put_bytes(&mut body, 1, k.as_bytes());
    }
    body.extend_from_slice(&encoded_records);
    let mut out = Vec::with_capacity(MAGIC.len() + body.len() + DIGEST_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&body);
    out.extend_from_slice(&Md5::digest(&body));
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | u64::from(WIRE_LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn aggregate_and_deaggregate_round_trip() -> Result<(), KplError> {
        let records: Vec<(&str, &[u8])> = vec![
            ("u-1", b"{\"trade_id\":\"t1\"}"),
            ("u-2", b""),
            ("u-1", b"{\"trade_id\":\"t3\"}"),
        ];
        let agg = aggregate(records.iter().copied());
        assert!(is_aggregated(&agg));
        let users = deaggregate(&agg)?;
        let back: Vec<(&str, &[u8])> = users.iter().map(|u| (u.partition_key, u.data)).collect();
        assert_eq!(back, records);
        assert!(users.iter().all(|u| u.explicit_hash_key.is_none()));
        let text = base64::engine::general_purpose::STANDARD.encode(&agg);
        assert!(text.starts_with(BASE64_PREFIX), "{text}");
        Ok(())
    }

    #[test]
    fn a_changed_byte_fails_the_digest() {
        let mut agg = aggregate([("u-1", &b"{}"[..])]);
        let mid = agg.len() / 2;
        agg[mid] ^= 0x20;
        assert!(matches!(
            deaggregate(&agg),
            Err(KplError::DigestMismatch { .. })
        ));
        assert_eq!(
            deaggregate(&agg).err().map(|e| e.code()),
            Some("kpl_digest_mismatch")
        );
    }

    /// Magic, `body`, and its true digest: a record that passes the digest check.
    fn with_digest(body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(body);
        out.extend_from_slice(&Md5::digest(body));
        out
    }

    #[test]
    fn bodies_that_are_not_the_message_are_refused_with_a_reason() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty aggregate", vec![], "kpl_empty"),
            ("only a key table", vec![0x0A, 0x01, b'k'], "kpl_empty"),
            ("truncated varint", vec![0x0A, 0xFF], "kpl_malformed"),
            (
                "length past the end",
                vec![0x0A, 0x7F, b'k'],
                "kpl_malformed",
            ),
            // record {partition_key_index: 3, data: "x"} with an empty key table
            (
                "index outside the table",
                vec![0x1A, 0x05, 0x08, 0x03, 0x1A, 0x01, b'x'],
                "kpl_malformed",
            ),
            // record without data
            (
                "no data",
                vec![0x0A, 0x01, b'k', 0x1A, 0x02, 0x08, 0x00],
                "kpl_malformed",
            ),
            ("wire type 7", vec![0x0F], "kpl_malformed"),
            ("key not UTF-8", vec![0x0A, 0x01, 0xFF], "kpl_malformed"),
        ];
        for (name, body, code) in cases {
            let got = deaggregate(&with_digest(&body)).err().map(|e| e.code());
            assert_eq!(got, Some(code), "{name}");
        }
        assert_eq!(
            deaggregate(&MAGIC).err().map(|e| e.code()),
            Some("kpl_malformed")
        );
    }

    #[test]
    fn unknown_fields_and_tags_are_skipped() -> Result<(), KplError> {
        // key table ["k"], an unknown fixed64 field 9, one record {pk 0, data "d", tag {...}}
        let mut body = vec![0x0A, 0x01, b'k', 0x49, 1, 2, 3, 4, 5, 6, 7, 8];
        body.extend_from_slice(&[
            0x1A, 0x0A, 0x08, 0x00, 0x1A, 0x01, b'd', 0x22, 0x03, 0x0A, 0x01, b't',
        ]);
        let got = with_digest(&body);
        let users = deaggregate(&got)?;
        assert_eq!(users.len(), 1);
        assert_eq!((users[0].partition_key, users[0].data), ("k", &b"d"[..]));
        Ok(())
    }
}
