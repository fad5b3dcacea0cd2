//! Bytes cut into chunks of whole records (after a control byte: delimiter, filler, repetition,
//! record cap, read size).
//! The invariants are `lago::fuzzing::chunker`, which the tests replay on the corpus.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lago::fuzzing::chunker(data));
