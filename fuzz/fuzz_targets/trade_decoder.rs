//! Bytes as one trade record, through `Trade::parse`.
//! The invariants are `lago::fuzzing::trade_decoder`, which the tests replay on the corpus.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lago::fuzzing::trade_decoder(data));
