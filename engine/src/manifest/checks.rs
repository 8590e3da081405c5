//! Checks across stages: needs that name real stages, no cycles, known kinds with
//! valid params.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::graph::DiGraph;

use super::{RawStage, StageSpec, Validator};
use crate::diag::did_you_mean;
use crate::stage::{CheckEnv, Registry, Scope};

impl Validator<'_> {
    pub(super) fn check_needs(&mut self, raw: &[RawStage]) {
        let ids: Vec<&str> = raw.iter().map(|r| r.id.as_str()).collect();
        for r in raw {
            let mut seen = BTreeSet::new();
            for (n, pos) in &r.needs {
                if n == &r.id {
                    self.err(*pos, format!("stage '{}' needs itself", r.id), None);
                } else if !ids.contains(&n.as_str()) {
                    self.err(
                        *pos,
                        format!("stage '{}' needs '{n}', which is not a stage", r.id),
                        did_you_mean(n, ids.iter().copied())
                            .or(Some(format!("stages are: {}", ids.join(", ")))),
                    );
                } else if !seen.insert(n) {
                    self.err(
                        *pos,
                        format!("stage '{}' lists '{n}' twice in needs", r.id),
                        None,
                    );
                }
            }
        }
    }

    pub(super) fn check_cycles(&mut self, raw: &[RawStage]) {
        let mut g = DiGraph::<usize, ()>::new();
        let nodes: Vec<_> = (0..raw.len()).map(|i| g.add_node(i)).collect();
        let index: BTreeMap<&str, usize> = raw
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.as_str(), i))
            .collect();
        for (i, r) in raw.iter().enumerate() {
            for (n, _) in &r.needs {
                if let Some(&j) = index.get(n.as_str())
                    && i != j
                {
                    g.add_edge(nodes[j], nodes[i], ());
                }
            }
        }
        for scc in petgraph::algo::tarjan_scc(&g) {
            if scc.len() < 2 {
                continue;
            }
            let members: BTreeSet<usize> = scc.iter().map(|n| g[*n]).collect();
            // Walk needs inside the component from its first stage (in file order).
            let start = *members.iter().next().expect("non-empty");
            let mut path = vec![start];
            let mut cur = start;
            loop {
                let next = raw[cur]
                    .needs
                    .iter()
                    .filter_map(|(n, _)| index.get(n.as_str()).copied())
                    .filter(|j| members.contains(j))
                    .find(|j| *j == start || !path.contains(j));
                match next {
                    Some(j) if j == start => {
                        path.push(j);
                        break;
                    }
                    Some(j) => {
                        path.push(j);
                        cur = j;
                    }
                    None => break,
                }
            }
            let shown: Vec<&str> = path.iter().map(|&i| raw[i].id.as_str()).collect();
            self.err(
                raw[start].pos,
                format!("stages form a cycle: {}", shown.join(" -> ")),
                Some("`needs` must not loop back; remove one of these needs".into()),
            );
        }
    }

    pub(super) fn check_kinds(&mut self, raw: &[RawStage], registry: &Registry) -> Vec<StageSpec> {
        let scopes: BTreeMap<&str, Scope> = raw.iter().map(|r| (r.id.as_str(), r.scope)).collect();
        let mut out = Vec::new();
        for r in raw {
            let Some(kind_name) = &r.kind else { continue };
            let Some(kind) = registry.get(kind_name) else {
                let pos = r
                    .node
                    .as_map()
                    .and_then(|m| m.iter().find(|(k, _, _)| k == "uses"))
                    .map(|(_, _, n)| n.pos)
                    .unwrap_or(r.pos);
                self.err(
                    pos,
                    format!("unknown stage kind '{kind_name}' in stage '{}'", r.id),
                    did_you_mean(kind_name, registry.names())
                        .or(Some("run `vsum stages` to list the built-in kinds".into())),
                );
                continue;
            };
            let needs: Vec<(String, Scope)> = r
                .needs
                .iter()
                .map(|(n, _)| {
                    (
                        n.clone(),
                        scopes.get(n.as_str()).copied().unwrap_or(Scope::Video),
                    )
                })
                .collect();
            let env = CheckEnv {
                stage_id: &r.id,
                scope: r.scope,
                needs: &needs,
            };
            match kind.check(&r.params, &env) {
                Ok(params) => out.push(StageSpec {
                    id: r.id.clone(),
                    kind: kind_name.clone(),
                    params,
                    needs: r.needs.iter().map(|(n, _)| n.clone()).collect(),
                    lane: r.lane.unwrap_or(kind.default_lane()),
                    scope: r.scope,
                    retries: r.retries,
                    description: r.description.clone(),
                    publish: r.publish.clone(),
                    pos: r.pos,
                }),
                Err(errors) => {
                    for e in errors {
                        let pos = r.params_node.locate(&e.path);
                        let at = if e.path.is_empty() {
                            String::new()
                        } else {
                            format!(" (at {})", e.path.join("."))
                        };
                        let hint = e.hint.or_else(|| {
                            Some(format!(
                                "`vsum stages` lists the parameters of '{kind_name}'"
                            ))
                        });
                        self.err(
                            pos,
                            format!("stage '{}' ({kind_name}): {}{at}", r.id, e.message),
                            hint,
                        );
                    }
                }
            }
        }
        out
    }
}
