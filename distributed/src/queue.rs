//! The job queue: one NATS JetStream work-queue stream (`VSUM_JOBS`, subjects
//! `vsum.job.cpu.<key>` and `vsum.job.gpu.<key>`) and one durable pull consumer per
//! lane. The key in the subject lets a coordinator ask whether a job is still queued
//! when the server drops its publish as a duplicate (the job may have finished and its
//! entry been lost since: then it is published again under a fresh id). A
//! delivered job is leased to its worker for `lease` (the consumer's ack wait), which a
//! running job keeps extending with "in progress" acks; a worker that dies or stops
//! lets the lease run out and the job goes to another. Explicit acks; at most
//! `max_deliver` deliveries; the message id is the job's key, so the server drops a
//! job published twice within its duplicate window.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::{self, consumer, stream};
use vsum_engine::run::RemoteJob;
use vsum_engine::stage::Lane;

pub const STREAM: &str = "VSUM_JOBS";

/// Core NATS subject on which workers say a job's entry (or failure) is in the shared
/// cache (payload: the key). Only a hint: coordinators poll the cache anyway.
pub const DONE: &str = "vsum.done";

#[derive(Debug, thiserror::Error)]
#[error("job queue {url}: {what}")]
pub struct QueueError {
    pub url: String,
    pub what: String,
}

/// How jobs are leased and redelivered (the coordinator and every worker must agree:
/// whoever comes first creates the stream and consumers with these).
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// How long a worker holds a job without an "in progress" ack.
    pub lease: Duration,
    /// Deliveries of one job before it is given up on.
    pub max_deliver: i64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            lease: Duration::from_secs(60),
            max_deliver: 5,
        }
    }
}

impl QueueConfig {
    /// How often a worker says "in progress" while a job runs.
    pub fn heartbeat(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(200))
    }

    /// The delay before delivery `n + 1` after a transient failure of delivery `n`.
    pub fn backoff(&self, delivered: i64) -> Duration {
        let base = (self.lease / 20).clamp(Duration::from_millis(100), Duration::from_secs(5));
        base * 2u32.saturating_pow(delivered.clamp(0, 6) as u32)
    }
}

pub fn subject(lane: Lane) -> &'static str {
    match lane {
        Lane::Cpu => "vsum.job.cpu",
        Lane::Gpu => "vsum.job.gpu",
    }
}

/// The subject of one job's message.
pub fn job_subject(lane: Lane, key: &str) -> String {
    format!("{}.{key}", subject(lane))
}

fn consumer_name(lane: Lane) -> &'static str {
    match lane {
        Lane::Cpu => "vsum-cpu",
        Lane::Gpu => "vsum-gpu",
    }
}

#[derive(Clone)]
pub struct Queue {
    pub js: jetstream::Context,
    pub client: async_nats::Client,
    pub cfg: QueueConfig,
    url: String,
}

impl Queue {
    /// Connects to `nats://HOST:PORT` (retrying while the server is not up yet; the
    /// client reconnects by itself afterwards) and makes sure the stream exists.
    pub async fn connect(url: &str, cfg: QueueConfig) -> Result<Queue, QueueError> {
        let err = |what: String| QueueError {
            url: url.to_string(),
            what,
        };
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| err(e.to_string()))?;
        let js = jetstream::new(client.clone());
        let q = Queue {
            js,
            client,
            cfg,
            url: url.to_string(),
        };
        q.stream().await?;
        Ok(q)
    }

    fn err(&self, what: impl std::fmt::Display) -> QueueError {
        QueueError {
            url: self.url.clone(),
            what: what.to_string(),
        }
    }

    pub async fn stream(&self) -> Result<stream::Stream, QueueError> {
        self.js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec![
                    format!("{}.*", subject(Lane::Cpu)),
                    format!("{}.*", subject(Lane::Gpu)),
                ],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| self.err(format!("cannot create the stream {STREAM}: {e}")))
    }

    /// The lane's durable pull consumer.
    pub async fn consumer(&self, lane: Lane) -> Result<consumer::PullConsumer, QueueError> {
        let stream = self.stream().await?;
        stream
            .get_or_create_consumer(
                consumer_name(lane),
                consumer::pull::Config {
                    durable_name: Some(consumer_name(lane).into()),
                    filter_subject: format!("{}.*", subject(lane)),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.cfg.lease,
                    max_deliver: self.cfg.max_deliver,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                self.err(format!(
                    "cannot create the consumer {}: {e}",
                    consumer_name(lane)
                ))
            })
    }

    /// Publishes a job (message id `msg_id`, normally its key) and waits for the
    /// server to store it. `Ok(true)`: the server dropped it as a duplicate.
    pub async fn publish(&self, job: &RemoteJob, msg_id: &str) -> Result<bool, QueueError> {
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, msg_id);
        let payload = serde_json::to_vec(job).expect("job serializes");
        let ack = self
            .js
            .publish_with_headers(job_subject(job.lane, &job.key), headers, payload.into())
            .await
            .map_err(|e| self.err(format!("cannot publish {}: {e}", job.label.describe())))?;
        let ack = ack
            .await
            .map_err(|e| self.err(format!("job {} not stored: {e}", job.label.describe())))?;
        Ok(ack.duplicate)
    }

    /// Whether a message for the job `key` is in the stream (queued or leased).
    pub async fn queued(&self, lane: Lane, key: &str) -> bool {
        let Ok(stream) = self.stream().await else {
            return false;
        };
        stream
            .get_last_raw_message_by_subject(&job_subject(lane, key))
            .await
            .is_ok()
    }
}
