//! lago's library: the energy lake's data contracts, the streaming CSV → Parquet transform, the
//! lake layout and its storage ports, and synthetic data for tests, demos and benchmarks.
//!
//! The Lambda functions and the `lago` CLI are thin shells over these functions: there is one
//! transform, used the same way on S3 and on a local folder laid out like the bucket.
//!
//! Features: `aws` — the AWS adapters of the ports and the functions' runtime plumbing (the
//! Lambda functions); `local` — the local twin and what tests need: in-memory and local-folder
//! adapters, the data generators, the trade replay and benchmark, the in-memory catalog and the
//! moto helper (the CLI and every crate's tests). Neither is in the other's binaries.

#[cfg(feature = "aws")]
pub mod aws;
pub mod catalog;
pub mod contract;
pub mod dialect;
#[cfg(any(test, feature = "local"))]
pub mod fuzzing;
#[cfg(any(test, feature = "local"))]
pub mod generate;
pub mod history;
pub mod ingest;
pub mod integrity;
pub mod lake;
pub mod load;
pub mod parse;
pub mod prefetch;
pub mod redrive;
pub mod runtime;
pub mod text;
pub mod trades;
pub mod transform;
