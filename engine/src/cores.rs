//! The machine's cores as a budget shared by the CPU lane and the GPU lane.
//!
//! Without a GPU, the GPU lane runs its models (Whisper, YOLO) on the CPU with several
//! threads, and whisper.cpp's threads spin while they wait for each other: one more busy
//! thread on a 2-core machine makes a transcription several times slower. So every
//! job holds cores while it runs: a CPU-lane job its share, a GPU-lane job as many as
//! its model uses (one when a real GPU does the work). The GPU lane goes first: while it
//! waits, no new CPU-lane job starts, so a long batch never starves the one lane that
//! serializes the expensive work.

use std::sync::{Condvar, Mutex};

#[derive(Debug)]
struct State {
    free: usize,
    /// Cores the GPU lane is waiting for (0 when it is not waiting).
    gpu_waiting: usize,
}

/// A counting budget of cores.
#[derive(Debug)]
pub struct Cores {
    total: usize,
    state: Mutex<State>,
    freed: Condvar,
}

/// Cores held by a running job; given back when dropped.
#[derive(Debug)]
pub struct Held<'a> {
    cores: &'a Cores,
    n: usize,
}

impl Cores {
    pub fn new(total: usize) -> Cores {
        let total = total.max(1);
        Cores {
            total,
            state: Mutex::new(State {
                free: total,
                gpu_waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Waits for `n` cores (at most the total) for a CPU-lane job. Yields to a waiting
    /// GPU lane.
    pub fn cpu(&self, n: usize) -> Held<'_> {
        let n = n.clamp(1, self.total);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.free < n || s.gpu_waiting > 0 {
            s = self.freed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.free -= n;
        Held { cores: self, n }
    }

    /// Waits for `n` cores (at most the total) for the GPU lane, ahead of the CPU lane.
    pub fn gpu(&self, n: usize) -> Held<'_> {
        let n = n.clamp(1, self.total);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.gpu_waiting = n;
        while s.free < n {
            s = self.freed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.gpu_waiting = 0;
        s.free -= n;
        Held { cores: self, n }
    }

    /// More cores for a GPU-lane job that holds `held` and is about to compute with
    /// `threads` threads on the CPU (its model has no GPU). Only the GPU lane may top up
    /// (one job at a time, ahead of the CPU lane), so two jobs can never each hold part
    /// of what the other waits for.
    pub fn top_up(&self, threads: usize, held: usize) -> Option<Held<'_>> {
        let extra = threads.min(self.total).saturating_sub(held);
        (extra > 0).then(|| self.gpu(extra))
    }

    /// Cores free right now.
    pub fn free(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).free
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut s = self.cores.state.lock().unwrap_or_else(|e| e.into_inner());
        s.free += self.n;
        drop(s);
        self.cores.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn never_more_cores_busy_than_the_machine_has() {
        let cores = Arc::new(Cores::new(2));
        let busy = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for i in 0..12 {
            let (cores, busy, peak) = (cores.clone(), busy.clone(), peak.clone());
            handles.push(std::thread::spawn(move || {
                let n = if i % 4 == 0 { 2 } else { 1 };
                let _held = if i % 4 == 0 {
                    cores.gpu(n)
                } else {
                    cores.cpu(n)
                };
                let now = busy.fetch_add(n, Ordering::SeqCst) + n;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                busy.fetch_sub(n, Ordering::SeqCst);
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 2);
        assert_eq!(cores.free(), 2);
    }

    #[test]
    fn a_waiting_gpu_lane_goes_before_new_cpu_jobs() {
        let cores = Arc::new(Cores::new(2));
        let first = cores.cpu(1);
        let (tx, rx) = std::sync::mpsc::channel();
        let c = cores.clone();
        let t1 = tx.clone();
        let gpu = std::thread::spawn(move || {
            let _g = c.gpu(2);
            t1.send("gpu").unwrap();
        });
        // Give the GPU lane time to start waiting, then ask for a CPU core.
        while cores.state.lock().unwrap().gpu_waiting == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let c = cores.clone();
        let cpu = std::thread::spawn(move || {
            let _h = c.cpu(1);
            tx.send("cpu").unwrap();
        });
        std::thread::sleep(Duration::from_millis(20));
        drop(first);
        gpu.join().unwrap();
        cpu.join().unwrap();
        assert_eq!(rx.recv().unwrap(), "gpu");
        assert_eq!(rx.recv().unwrap(), "cpu");
        // Asking for more than the machine has waits for all of it, not forever.
        let all = cores.cpu(99);
        assert_eq!(cores.free(), 0);
        drop(all);
    }
}
