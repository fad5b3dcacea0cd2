//! Property tests of the processor.
