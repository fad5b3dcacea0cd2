//! The fuzz targets' committed corpus (`fuzz/corpus/<target>/`), replayed with the invariants
//! the targets check (`lago::fuzzing`), so every input that once broke something stays a test.
//! An empty or missing corpus fails.

use std::path::PathBuf;

use lago::fuzzing::{self, replay_corpus};

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn transform_csv_corpus_keeps_its_invariants() {
    replay_corpus(&corpus("transform_csv"), fuzzing::transform_csv);
}

#[test]
fn chunker_corpus_keeps_its_invariants() {
    replay_corpus(&corpus("chunker"), fuzzing::chunker);
}

#[test]
fn trade_decoder_corpus_keeps_its_invariants() {
    replay_corpus(&corpus("trade_decoder"), fuzzing::trade_decoder);
}

#[test]
fn kinesis_event_corpus_keeps_its_invariants() {
    replay_corpus(&corpus("kinesis_event"), fuzzing::kinesis_event);
}

#[test]
#[should_panic(expected = "holds no input")]
fn an_empty_corpus_fails() {
    let dir = tempfile::tempdir().unwrap();
    replay_corpus(dir.path(), fuzzing::chunker);
}
