//! The GPU lane of the local executor: one thread, one job at a time, models kept
//! loaded across jobs, and jobs of the loaded model picked first.

use std::collections::VecDeque;

use crossbeam_channel::Receiver;

use super::executor::{Completions, Job};
use crate::stage::Resources;

/// Runs GPU-lane jobs until `rx` closes.
pub(super) fn run(rx: Receiver<Job<'_>>, done: Completions, gpu_models: usize) {
    let mut resources: Option<Resources> = None;
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut last_group: Option<String> = None;
    loop {
        if queue.is_empty() {
            match rx.recv() {
                Ok(job) => queue.push_back(job),
                Err(_) => return,
            }
        }
        while let Ok(job) = rx.try_recv() {
            queue.push_back(job);
        }
        // Stay on the loaded model while jobs for it are queued.
        let pick = last_group
            .as_ref()
            .and_then(|g| queue.iter().position(|j| j.group() == Some(g.as_str())))
            .unwrap_or(0);
        let job = queue.remove(pick).expect("non-empty queue");
        last_group = job.group().map(str::to_string);
        job.wait_while_paused();
        let res = resources.get_or_insert_with(|| {
            let r = Resources::new(gpu_models, job.events().clone());
            // With a GPU, models are also bounded by its memory (measured per load).
            match crate::monitor::Gpu::open().vram_probe() {
                Some(probe) => r.with_vram(probe),
                None => r,
            }
        });
        done.send(job.run_here(Some(res)));
    }
}
