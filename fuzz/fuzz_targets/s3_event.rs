//! Bytes as the s3-landing function's S3 notification (and as a key to decode).
//! The invariants are `s3_landing::fuzzing::s3_event`, which the tests replay on the corpus.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| s3_landing::fuzzing::s3_event(data));
