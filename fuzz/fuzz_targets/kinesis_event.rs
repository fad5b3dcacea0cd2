//! Bytes as the trades-stream function's Kinesis event (or, when not JSON, the content of a
//! KPL aggregate), expanded into the processor's records.
//! The invariants are `lago::fuzzing::kinesis_event`, which the tests replay on the corpus.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lago::fuzzing::kinesis_event(data));
