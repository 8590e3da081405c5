//! The job graph: every selected stage for every video, plus one job per batch stage.
//!
//! Built with petgraph from the manifest's stage DAG (already checked acyclic). Also
//! renders the stage DAG for `vsum dag` as DOT, Mermaid or text.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::manifest::Manifest;
use crate::stage::Scope;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobNode {
    /// Index into `Manifest::stages`.
    pub stage: usize,
    /// Index into the run's videos; `None` for batch jobs.
    pub video: Option<usize>,
}

#[derive(Debug)]
pub struct JobGraph {
    pub graph: DiGraph<JobNode, ()>,
}

/// The stages to run: `only` and everything they need, or all stages.
pub fn select(manifest: &Manifest, only: &[String]) -> BTreeSet<usize> {
    if only.is_empty() {
        return (0..manifest.stages.len()).collect();
    }
    let mut chosen = BTreeSet::new();
    let mut todo: Vec<&str> = only.iter().map(String::as_str).collect();
    while let Some(id) = todo.pop() {
        if let Some(i) = manifest.stages.iter().position(|s| s.id == id)
            && chosen.insert(i)
        {
            todo.extend(manifest.stages[i].needs.iter().map(String::as_str));
        }
    }
    chosen
}

impl JobGraph {
    pub fn build(manifest: &Manifest, videos: usize, stages: &BTreeSet<usize>) -> JobGraph {
        let mut graph = DiGraph::new();
        // per_video[v][s]: the job of stage s for video v.
        let mut per_video: Vec<Vec<Option<NodeIndex>>> =
            vec![vec![None; manifest.stages.len()]; videos];
        let mut batch: Vec<Option<NodeIndex>> = vec![None; manifest.stages.len()];
        // Videos outer, stages inner: a video's jobs sit together, so the first videos
        // finish early and the batch's first results appear soon.
        for (v, row) in per_video.iter_mut().enumerate() {
            for &s in stages {
                if manifest.stages[s].scope == Scope::Video {
                    row[s] = Some(graph.add_node(JobNode {
                        stage: s,
                        video: Some(v),
                    }));
                }
            }
        }
        for &s in stages {
            if manifest.stages[s].scope == Scope::Batch {
                batch[s] = Some(graph.add_node(JobNode {
                    stage: s,
                    video: None,
                }));
            }
        }
        let index_of = |id: &str| manifest.stages.iter().position(|s| s.id == id);
        for &s in stages {
            for need in &manifest.stages[s].needs {
                let Some(t) = index_of(need) else { continue };
                let edges: Vec<(Option<NodeIndex>, Option<NodeIndex>)> =
                    match (manifest.stages[s].scope, manifest.stages[t].scope) {
                        (Scope::Video, Scope::Video) => {
                            per_video.iter().map(|row| (row[t], row[s])).collect()
                        }
                        // After the batch: each video's job waits for the one batch job
                        // (e.g. a video's related videos, from the library's index).
                        (Scope::Video, Scope::Batch) => {
                            per_video.iter().map(|row| (batch[t], row[s])).collect()
                        }
                        (Scope::Batch, Scope::Video) => {
                            per_video.iter().map(|row| (row[t], batch[s])).collect()
                        }
                        (Scope::Batch, Scope::Batch) => vec![(batch[t], batch[s])],
                    };
                for (a, b) in edges {
                    if let (Some(a), Some(b)) = (a, b) {
                        graph.add_edge(a, b, ());
                    }
                }
            }
        }
        JobGraph { graph }
    }
}

/// Output formats of `vsum dag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DagFormat {
    Dot,
    Mermaid,
    Text,
}

/// Renders the stage DAG.
pub fn render(manifest: &Manifest, format: DagFormat) -> String {
    let mut s = String::new();
    let label = |st: &crate::manifest::StageSpec| {
        let scope = if st.scope == Scope::Batch {
            ", batch"
        } else {
            ""
        };
        format!("{}\\n{} ({}{scope})", st.id, st.kind, st.lane)
    };
    match format {
        DagFormat::Dot => {
            let _ = writeln!(s, "digraph \"{}\" {{", manifest.name.replace('"', "'"));
            let _ = writeln!(s, "  rankdir=LR;");
            for st in &manifest.stages {
                let shape = if st.lane == crate::stage::Lane::Gpu {
                    "box3d"
                } else {
                    "box"
                };
                let _ = writeln!(
                    s,
                    "  \"{}\" [label=\"{}\", shape={shape}];",
                    st.id,
                    label(st)
                );
            }
            for st in &manifest.stages {
                for n in &st.needs {
                    let _ = writeln!(s, "  \"{n}\" -> \"{}\";", st.id);
                }
            }
            s.push_str("}\n");
        }
        DagFormat::Mermaid => {
            s.push_str("flowchart LR\n");
            for st in &manifest.stages {
                let _ = writeln!(
                    s,
                    "  {}[\"{}\"]",
                    mermaid_id(&st.id),
                    label(st).replace("\\n", "<br/>")
                );
            }
            for st in &manifest.stages {
                for n in &st.needs {
                    let _ = writeln!(s, "  {} --> {}", mermaid_id(n), mermaid_id(&st.id));
                }
            }
        }
        DagFormat::Text => {
            for st in &manifest.stages {
                let needs = if st.needs.is_empty() {
                    String::new()
                } else {
                    format!("  <- {}", st.needs.join(", "))
                };
                let scope = if st.scope == Scope::Batch {
                    " batch"
                } else {
                    ""
                };
                let _ = writeln!(s, "{} ({}, {}{scope}){needs}", st.id, st.kind, st.lane);
            }
        }
    }
    s
}

fn mermaid_id(id: &str) -> String {
    id.replace(['.', '-'], "_")
}
