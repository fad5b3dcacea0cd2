//! The event-driven ingest pipeline's logic, shared by the four Lambda functions: what a landed
//! object is and which execution it starts (`landing`), the state machine's task inputs and
//! outputs (`task`), crawler control (`crawler`), the warehouse statements run through the
//! Redshift Data API (`statements`), and in-memory adapters of every port for tests (`memory`). The plumbing
//! every function shares (error kinds, environment, metrics, logging) is [`crate::runtime`].
//!
//! Nothing here depends on the AWS SDK: the ports are small async traits whose AWS adapters live
//! in [`crate::aws`] (feature `aws`). Futures returned by the ports are `Send`, so the Lambda
//! runtime can drive them from any tokio worker.

pub mod crawler;
pub mod landing;
#[cfg(any(test, feature = "local"))]
pub mod memory;
pub mod statements;
pub mod sweep;
pub mod task;
