//! Models and other expensive state kept alive on the GPU lane across jobs, so a batch
//! of 100 videos loads Whisper once, not 100 times.
//!
//! The cache is bounded. Without a GPU (models in RAM) by a count (`gpu_models` in the
//! config). With one, by what matters there, video memory: each load is measured (the
//! device's used memory before and after, from NVML), and before a new load the least
//! recently used resources go until the free memory could hold the largest one seen, so
//! a second model never pushes the first into an out-of-memory error mid-batch. The
//! count still caps the cache as a backstop.

use std::any::Any;
use std::collections::HashMap;

use crate::events::{Event, EventSink};

/// Reads the GPU's used and total memory (see [`crate::monitor::Gpu::vram_probe`]).
pub use crate::monitor::VramProbe;

struct Item {
    used: u64,
    /// Video memory it took when loaded (0 on the CPU or without a probe).
    vram: u64,
    value: Box<dyn Any>,
}

/// The GPU lane's resource cache, keyed by something stable such as a model's hash.
pub struct Resources {
    items: HashMap<String, Item>,
    clock: u64,
    capacity: usize,
    events: EventSink,
    vram: Option<VramProbe>,
    /// The largest load measured: the headroom kept free before loading another.
    largest: u64,
}

impl Resources {
    /// A cache of at most `capacity` resources.
    pub fn new(capacity: usize, events: EventSink) -> Self {
        Resources {
            items: HashMap::new(),
            clock: 0,
            capacity: capacity.max(1),
            events,
            vram: None,
            largest: 0,
        }
    }

    /// Bounds the cache by video memory too, read through `probe` (NVML on a GPU
    /// machine; see `monitor::Gpu::vram_probe`).
    pub fn with_vram(mut self, probe: VramProbe) -> Self {
        self.vram = Some(probe);
        self
    }

    /// Resources loaded now.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Returns the resource under `key`, loading it with `load` the first time.
    pub fn get_or_load<T: 'static, E>(
        &mut self,
        key: &str,
        load: impl FnOnce() -> Result<T, E>,
    ) -> Result<&mut T, E> {
        self.clock += 1;
        let now = self.clock;
        if !self.items.contains_key(key) {
            self.make_room();
            let before = self.read_vram().map(|(used, _)| used);
            let started = std::time::Instant::now();
            let value = load()?;
            let vram = match (before, self.read_vram()) {
                (Some(b), Some((a, _))) => a.saturating_sub(b),
                _ => 0,
            };
            self.largest = self.largest.max(vram);
            self.events.emit(Event::ResourceLoaded {
                key: key.to_string(),
                ms: started.elapsed().as_millis() as u64,
            });
            self.items.insert(
                key.to_string(),
                Item {
                    used: now,
                    vram,
                    value: Box::new(value),
                },
            );
        }
        let slot = self.items.get_mut(key).expect("inserted above");
        slot.used = now;
        Ok(slot
            .value
            .downcast_mut::<T>()
            .expect("a resource key is used with one type only"))
    }

    /// Frees one resource (e.g. after an out-of-memory error).
    pub fn drop_resource(&mut self, key: &str) {
        if self.items.remove(key).is_some() {
            self.events.emit(Event::ResourceDropped {
                key: key.to_string(),
            });
        }
    }

    fn read_vram(&self) -> Option<(u64, u64)> {
        self.vram.as_ref().and_then(|p| p())
    }

    /// Evicts least recently used resources until one more fits: under the count, and
    /// (with a probe) with free video memory for the largest load seen.
    fn make_room(&mut self) {
        loop {
            let over_count = self.items.len() >= self.capacity;
            let short_of_vram = self.largest > 0
                && self
                    .read_vram()
                    .is_some_and(|(used, total)| total.saturating_sub(used) < self.largest);
            // Only resources that hold video memory help with video memory.
            let oldest = self
                .items
                .iter()
                .filter(|(_, it)| over_count || it.vram > 0)
                .min_by_key(|(_, it)| it.used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) if over_count || short_of_vram => self.drop_resource(&k),
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    fn loads(events: &EventSink) -> Arc<Mutex<Vec<String>>> {
        let loads = Arc::new(Mutex::new(Vec::new()));
        let l = loads.clone();
        events.subscribe(move |e| {
            if let Event::ResourceLoaded { key, .. } = e {
                l.lock().unwrap().push(key.clone());
            }
        });
        loads
    }

    #[test]
    fn resources_load_once_and_evict_least_recently_used() {
        let events = EventSink::new();
        let loaded = loads(&events);
        let mut r = Resources::new(2, events);
        for key in ["a", "a", "b", "a", "c", "a", "b"] {
            let v: &mut String = r
                .get_or_load(key, || Ok::<_, ()>(key.to_uppercase()))
                .unwrap();
            assert_eq!(v, &key.to_uppercase());
        }
        // a, b loaded; c evicts b (a was used more recently); b comes back evicting c.
        assert_eq!(*loaded.lock().unwrap(), vec!["a", "b", "c", "b"]);
    }

    /// A model that holds `size` bytes of a fake GPU's memory while it is loaded.
    struct Weights {
        gpu: Arc<AtomicU64>,
        size: u64,
    }

    impl Drop for Weights {
        fn drop(&mut self) {
            self.gpu.fetch_sub(self.size, Ordering::SeqCst);
        }
    }

    #[test]
    fn with_a_gpu_the_bound_is_video_memory_not_a_count() {
        const GIB: u64 = 1 << 30;
        let gpu = Arc::new(AtomicU64::new(GIB)); // the driver and others use 1 GiB
        let g = gpu.clone();
        let events = EventSink::new();
        let loaded = loads(&events);
        let mut r = Resources::new(8, events)
            .with_vram(Box::new(move || Some((g.load(Ordering::SeqCst), 10 * GIB))));
        let load = |r: &mut Resources, key: &str, size: u64| {
            let gpu = gpu.clone();
            r.get_or_load(key, move || {
                gpu.fetch_add(size, Ordering::SeqCst);
                Ok::<_, ()>(Weights { gpu, size })
            })
            .map(|_| ())
            .unwrap();
        };
        // Three 3 GiB models fit in 10 GiB with 1 GiB used: 1 + 9 = 10, free 0.
        load(&mut r, "whisper", 3 * GIB);
        load(&mut r, "yolo", 3 * GIB);
        assert_eq!(r.len(), 2, "4 GiB free holds another 3 GiB model");
        load(&mut r, "ocr", 3 * GIB);
        // 1 GiB free: the next load first frees the least recently used model.
        load(&mut r, "whisper", 3 * GIB); // still loaded: no load, just used
        load(&mut r, "big", 3 * GIB);
        assert_eq!(r.len(), 3);
        assert_eq!(
            *loaded.lock().unwrap(),
            vec!["whisper", "yolo", "ocr", "big"],
            "yolo was the least recently used"
        );
        assert!(gpu.load(Ordering::SeqCst) <= 10 * GIB);
        // The count stays a backstop even with memory to spare.
        let mut small = Resources::new(1, EventSink::new()).with_vram(Box::new(|| Some((0, 100))));
        small.get_or_load("a", || Ok::<_, ()>(1u8)).unwrap();
        small.get_or_load("b", || Ok::<_, ()>(2u8)).unwrap();
        assert_eq!(small.len(), 1);
    }
}
