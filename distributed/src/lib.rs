//! vsum beyond one machine: the jobs a run misses go through NATS JetStream
//! ([`queue`]) to `vsum worker`s ([`worker`]) on any number of machines, and their
//! outputs come back through a shared S3-compatible cache ([`s3cache`]) with the local
//! store's layout, so no machine redoes a job another finished. The coordinator is an
//! ordinary [`vsum_engine::run::Executor`] ([`coordinator`]): planning, keys,
//! scheduling and the local store stay the engine's.

pub mod coordinator;
pub mod queue;
pub mod s3cache;
pub mod worker;

pub use coordinator::NatsExecutor;
pub use queue::QueueConfig;
pub use s3cache::S3Cache;
pub use worker::{Report, WorkerOptions};

/// Runs one of this crate's async calls to completion from synchronous code (tools,
/// tests), on a runtime of its own.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}
