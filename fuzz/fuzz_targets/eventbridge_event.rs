//! Bytes as the s3-landing function's EventBridge event (and as the detail of one).
//! The invariants are `s3_landing::fuzzing::eventbridge_event`, which the tests replay on the
//! corpus.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| s3_landing::fuzzing::eventbridge_event(data));
