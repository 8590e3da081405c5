//! One stage of a manifest: its keys, kind, params, needs, lane and scope, checked.

use std::path::Path;

use serde_json::Value;

use super::{COMMAND_KEYS, COMMAND_KIND, MAX_STAGE_ID, RawStage, STAGE_KEYS, Validator};
use crate::diag::did_you_mean;
use crate::stage::{Lane, Scope};
use crate::yaml::{Node, Pos};

impl Validator<'_> {
    pub(super) fn stage<'n>(&mut self, id: &str, pos: Pos, node: &'n Node) -> Option<RawStage<'n>> {
        let id_ok = !id.is_empty()
            && id != "."
            && id != ".."
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !id.starts_with('.');
        if !id_ok {
            self.err(
                pos,
                format!("stage id '{id}' is not allowed"),
                Some("use letters, digits, '_', '-' and '.' (it names an output folder)".into()),
            );
        } else if id.len() > MAX_STAGE_ID {
            self.err(
                pos,
                format!(
                    "stage id '{}...' is {} characters long; at most {MAX_STAGE_ID} are allowed",
                    &id[..24],
                    id.len()
                ),
                Some("it names an output folder and cache records: shorten it".into()),
            );
        }
        if matches!(id, "video" | "stem" | "out" | "videos") {
            self.err(
                pos,
                format!("stage id '{id}' is reserved: it is a placeholder name"),
                Some("pick another id".into()),
            );
        }
        let Some(entries) = node.as_map() else {
            self.err(
                node.pos,
                format!("stage '{id}' must be a mapping, found {}", node.type_name()),
                Some("give it `run: [...]` or `uses: <kind>`".into()),
            );
            return None;
        };
        let get = |k: &str| entries.iter().find(|(key, _, _)| key == k);
        for (k, kpos, _) in entries {
            if !STAGE_KEYS.contains(&k.as_str()) {
                self.err(
                    *kpos,
                    format!("unknown key '{k}' in stage '{id}'"),
                    did_you_mean(k, STAGE_KEYS)
                        .or(Some(format!("allowed keys: {}", STAGE_KEYS.join(", ")))),
                );
            }
        }
        let has_run = get("run").is_some();
        let uses = get("uses").and_then(|(_, _, n)| self.string(n, "uses"));
        let command_keys: Vec<_> = entries
            .iter()
            .filter(|(k, _, _)| COMMAND_KEYS.contains(&k.as_str()))
            .collect();
        let (kind, params, params_node) = match (has_run, &uses) {
            (true, Some(_)) => {
                self.err(
                    pos,
                    format!("stage '{id}' has both `run:` and `uses:`"),
                    Some(
                        "a stage is either a command (`run:`) or a built-in kind (`uses:`)".into(),
                    ),
                );
                (None, Value::Null, node)
            }
            (false, None) => {
                self.err(
                    pos,
                    format!("stage '{id}' has neither `run:` nor `uses:`"),
                    Some(
                        "add `run: [program, args...]` or `uses: <kind>` (see `vsum stages`)"
                            .into(),
                    ),
                );
                (None, Value::Null, node)
            }
            (true, None) => {
                if let Some((_, wpos, _)) = get("with") {
                    self.err(
                        *wpos,
                        format!("stage '{id}' is a command: `with:` is for `uses:` stages"),
                        Some("put command settings directly in the stage (`stdout:`, `outputs:`, ...)".into()),
                    );
                }
                let params: serde_json::Map<String, Value> = command_keys
                    .iter()
                    .map(|(k, _, n)| (k.clone(), n.to_json()))
                    .collect();
                (Some(COMMAND_KIND.to_string()), Value::Object(params), node)
            }
            (false, Some(kind)) => {
                for (k, kpos, _) in &command_keys {
                    self.err(
                        *kpos,
                        format!("`{k}:` belongs to command stages; stage '{id}' uses '{kind}'"),
                        Some(format!("put parameters of '{kind}' under `with:`")),
                    );
                }
                match get("with") {
                    Some((_, _, w)) if w.is_null() => {
                        (Some(kind.clone()), Value::Object(Default::default()), w)
                    }
                    Some((_, _, w)) => (Some(kind.clone()), w.to_json(), w),
                    None => (Some(kind.clone()), Value::Object(Default::default()), node),
                }
            }
        };
        let needs = match get("needs") {
            None => Vec::new(),
            Some((_, _, n)) => {
                let items: Vec<&Node> = match (n.as_seq(), n.as_str()) {
                    (Some(s), _) => s.iter().collect(),
                    (None, Some(_)) => vec![n],
                    _ => {
                        self.err(
                            n.pos,
                            format!(
                                "`needs` must be a list of stage ids, found {}",
                                n.type_name()
                            ),
                            None,
                        );
                        Vec::new()
                    }
                };
                items
                    .into_iter()
                    .filter_map(|i| self.string(i, "needs[]").map(|s| (s, i.pos)))
                    .collect()
            }
        };
        let lane = get("lane").and_then(|(_, _, n)| match n.as_str() {
            Some("cpu") => Some(Lane::Cpu),
            Some("gpu") => Some(Lane::Gpu),
            _ => {
                self.err(
                    n.pos,
                    format!(
                        "`lane` must be cpu or gpu, found {}",
                        n.scalar_text().unwrap_or(n.type_name())
                    ),
                    None,
                );
                None
            }
        });
        let scope = match get("scope").map(|(_, _, n)| (n, n.as_str())) {
            None | Some((_, Some("video"))) => Scope::Video,
            Some((_, Some("batch"))) => Scope::Batch,
            Some((n, _)) => {
                self.err(
                    n.pos,
                    format!(
                        "`scope` must be video or batch, found {}",
                        n.scalar_text().unwrap_or(n.type_name())
                    ),
                    None,
                );
                Scope::Video
            }
        };
        let retries = get("retries").and_then(|(_, _, n)| match n.to_json().as_u64() {
            Some(r) if r <= 100 => Some(r as u32),
            _ => {
                self.err(
                    n.pos,
                    "`retries` must be a whole number from 0 to 100",
                    None,
                );
                None
            }
        });
        let description = get("description").and_then(|(_, _, n)| self.string(n, "description"));
        let publish = match get("publish") {
            None => Vec::new(),
            Some((_, kpos, n)) => {
                let list = self.string_list(n, "publish");
                if scope != Scope::Batch {
                    self.err(
                        *kpos,
                        format!("`publish:` is for batch stages; stage '{id}' is per video"),
                        Some("add `scope: batch`, or drop `publish:`".into()),
                    );
                }
                for f in &list {
                    let p = Path::new(f);
                    if f.is_empty()
                        || p.is_absolute()
                        || p.components().count() != 1
                        || f.starts_with('.')
                    {
                        self.err(
                            n.pos,
                            format!("`publish:` entry '{f}' must be a plain file name"),
                            Some("e.g. `publish: [INDEX.md]`".into()),
                        );
                    }
                }
                list
            }
        };
        Some(RawStage {
            id: id.to_string(),
            pos,
            node,
            kind,
            params,
            params_node,
            needs,
            lane,
            scope,
            retries,
            description,
            publish,
        })
    }
}
