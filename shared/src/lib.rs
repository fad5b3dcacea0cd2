//! lago's library: the energy lake's data contracts, the streaming CSV → Parquet transform, the
//! lake layout and its storage ports, and synthetic data for tests, demos and benchmarks.
//!
//! The Lambda functions and the `lago` CLI are thin shells over these functions: there is one
//! transform, used the same way on S3 and on a local folder laid out like the bucket.

#[cfg(feature = "aws")]
pub mod aws;
pub mod catalog;
pub mod contract;
pub mod dialect;
pub mod generate;
pub mod ingest;
pub mod lake;
pub mod load;
pub mod parse;
pub mod prefetch;
pub mod runtime;
pub mod text;
pub mod trades;
pub mod transform;
