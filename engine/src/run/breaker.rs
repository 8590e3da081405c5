//! Circuit breakers: after a number of failures in a row of one stage kind, no more
//! jobs of that kind start in this run (a broken tool or model fails fast, not once per
//! video).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use crate::events::{Event, EventSink};
use crate::manifest::{COMMAND_KIND, StageSpec};

/// The breakers of one run: consecutive failures per breaker, and the open ones.
pub(super) struct Breakers {
    threshold: u32,
    state: Mutex<(BTreeMap<String, u32>, BTreeSet<String>)>,
}

impl Breakers {
    pub(super) fn new(threshold: u32) -> Breakers {
        Breakers {
            threshold: threshold.max(1),
            state: Mutex::new((BTreeMap::new(), BTreeSet::new())),
        }
    }

    pub(super) fn is_open(&self, st: &StageSpec) -> bool {
        self.state.lock().expect("breakers").1.contains(&name(st))
    }

    /// Why a job of `st` does not start while its breaker is open.
    pub(super) fn message(&self, st: &StageSpec) -> String {
        format!(
            "circuit breaker open: {} '{}' jobs failed in a row, so no more start in this run; fix the cause and rerun",
            self.threshold,
            name(st)
        )
    }

    /// Counts a success (resets) or a failure; opens the breaker at the threshold.
    pub(super) fn count(&self, st: &StageSpec, ok: bool, events: &EventSink) {
        let name = name(st);
        let mut b = self.state.lock().expect("breakers");
        let n = b.0.entry(name.clone()).or_default();
        if ok {
            *n = 0;
            return;
        }
        *n += 1;
        let n = *n;
        if n >= self.threshold && b.1.insert(name.clone()) {
            drop(b);
            events.emit(Event::BreakerOpened {
                kind: name,
                failures: n,
            });
        }
    }
}

/// What a circuit breaker counts: a stage kind; each command stage counts on its own,
/// since two command stages share nothing but the name `command`.
fn name(st: &StageSpec) -> String {
    if st.kind == COMMAND_KIND {
        format!("command:{}", st.id)
    } else {
        st.kind.clone()
    }
}
