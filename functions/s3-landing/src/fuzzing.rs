//! The invariants the `s3_event` and `eventbridge_event` fuzz targets of `fuzz/` check, as
//! functions of the input bytes, so the tests below replay the committed corpus
//! (`fuzz/corpus/<target>/`) with exactly the same checks. Compiled for the tests and with the
//! `fuzzing` feature (the fuzz crate's), never into the function's binary.
//!
//! Each function returns quietly when every invariant holds and panics, naming the invariant,
//! when one breaks; bytes that are not JSON are no failure (the Lambda runtime refuses them
//! before the handler runs).

use lago::ingest::landing::{classify, decode_key, is_valid_execution_name, land, LandedObject};
use lago::ingest::memory::{block_on, MemoryStarter};
use serde_json::{json, Value};

use crate::{objects, LandingError};

/// An S3 event as JSON, then as the records of a notification (an array) or its one record
/// (anything else), so that records are explored without the envelope having to be found.
/// Every time: reading it never panics, every record of the event ends as a landed object or as
/// an invalid record (and [`land`] reports each once), a landed object's key is the event's key
/// decoded, and an accepted object gets a valid execution name. The bytes as text are also a
/// key for [`decode_key`], which must decode exactly the keys whose escapes are `%` and two hex
/// digits, into UTF-8.
pub fn s3_event(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        check_key(text);
    }
    let Ok(event) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    check_event(&event);
    let records = match event {
        Value::Array(records) => records,
        other => vec![other],
    };
    check_event(&json!({ "Records": records }));
}

/// An EventBridge event as JSON, then as the `detail` of an S3 "Object Created" event, which
/// must name exactly one object (landed or invalid) unless the detail does not read. The
/// invariants of [`s3_event`] hold for both.
pub fn eventbridge_event(data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    check_event(&event);
    let wrapped = json!({
        "version": "0",
        "id": "2d4eba74-fd51-3966-4bfa-b013c9da8ff1",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2025-05-11T02:30:41Z",
        "region": "us-east-1",
        "resources": [],
        "detail": event,
    });
    match objects(wrapped.clone()) {
        Ok(records) => assert_eq!(
            records.len(),
            1,
            "eventbridge_event: an Object Created event named {} objects",
            records.len()
        ),
        Err(LandingError::Malformed(_)) => {}
        Err(e) => panic!("eventbridge_event: an Object Created event failed otherwise: {e}"),
    }
    check_event(&wrapped);
}

/// [`decode_key`] against a decoder written from its contract.
fn check_key(raw: &str) {
    let decoded = decode_key(raw).ok();
    let expected = percent_decoded(raw);
    assert!(
        decoded == expected,
        "s3_event: decode_key({raw:?}) gave {decoded:?}, the contract says {expected:?}"
    );
}

/// `+` is a space, `%` and two hex digits a byte, every other byte itself; the bytes must be
/// UTF-8.
fn percent_decoded(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let digit = |c: u8| char::from(c).to_digit(16);
                out.push((digit(hex[0])? * 16 + digit(hex[1])?) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The invariants of one event given to [`objects`].
fn check_event(event: &Value) {
    let records = match objects(event.clone()) {
        Ok(records) => records,
        Err(LandingError::Malformed(_) | LandingError::UnknownEvent(_)) => return,
        Err(e) => panic!("s3_event: reading an event failed as only starting one may: {e}"),
    };
    let raw_keys: Vec<Option<&str>> =
        if event.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
            Vec::new()
        } else if let Some(given) = event.get("Records") {
            let Some(given) = given.as_array() else {
                panic!(
                    "s3_event: read {} objects from Records that are no array",
                    records.len()
                );
            };
            given
                .iter()
                .map(|r| r.pointer("/s3/object/key").and_then(Value::as_str))
                .collect()
        } else {
            vec![event.pointer("/detail/object/key").and_then(Value::as_str)]
        };
    assert_eq!(
        records.len(),
        raw_keys.len(),
        "s3_event: an event of {} records named {} objects",
        raw_keys.len(),
        records.len()
    );
    let mut invalid = 0u32;
    for (record, raw) in records.iter().zip(&raw_keys) {
        match record {
            Ok(obj) => check_object(obj, *raw),
            Err(bad) => {
                assert!(
                    !bad.detail.is_empty(),
                    "s3_event: an invalid record says nothing"
                );
                invalid += 1;
            }
        }
    }
    let n = records.len();
    let report = block_on(land(&MemoryStarter::default(), None, records));
    let outcomes =
        report.started + report.already_started + report.ignored + report.invalid + report.failed;
    assert!(
        report.records.len() == n && outcomes as usize == n,
        "s3_event: {n} records, {} reported, outcomes counted {outcomes}",
        report.records.len()
    );
    assert_eq!(
        report.invalid, invalid,
        "s3_event: invalid records miscounted"
    );
    assert_eq!(
        report.failed, 0,
        "s3_event: a start failed on a store that never fails"
    );
}

/// A landed object against the key its event gave.
fn check_object(obj: &LandedObject, raw: Option<&str>) {
    let Some(raw) = raw else {
        panic!(
            "s3_event: landed {:?}, a key the event does not give",
            obj.key
        );
    };
    assert!(
        percent_decoded(raw).as_deref() == Some(obj.key.as_str()),
        "s3_event: landed {:?} from the key {raw:?}",
        obj.key
    );
    if let Ok(accepted) = classify(obj, None) {
        assert!(
            is_valid_execution_name(&accepted.execution_name),
            "s3_event: the execution name {:?} is not one Step Functions accepts",
            accepted.execution_name
        );
        assert_eq!(
            accepted.input.key, obj.key,
            "s3_event: the execution input names another key"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use lago::fuzzing::replay_corpus;

    fn corpus(target: &str) -> String {
        format!("{}/../../fuzz/corpus/{target}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn the_s3_event_corpus_keeps_its_invariants() {
        replay_corpus(Path::new(&corpus("s3_event")), super::s3_event);
    }

    #[test]
    fn the_eventbridge_event_corpus_keeps_its_invariants() {
        replay_corpus(
            Path::new(&corpus("eventbridge_event")),
            super::eventbridge_event,
        );
    }
}
