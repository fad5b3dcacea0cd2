//! Bytes as a source file (after a control byte: dataset, gzip, repetition), through the
//! transform on one thread and on two against the lake in memory.
//! The invariants are `lago::fuzzing::transform_csv`, which the tests replay on the corpus.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lago::fuzzing::transform_csv(data));
