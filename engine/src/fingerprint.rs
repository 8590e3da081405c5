//! The fingerprint of a job, and the cache key derived from it.
//!
//! A key is the blake3 of the fingerprint's canonical JSON (sorted keys, no spaces).
//! The fingerprint is stored beside each cache entry so `vsum cache why` can show
//! exactly which part changed. It must never contain an absolute path, a wall-clock
//! time, a thread count or a randomised hash: the same inputs give the same key on
//! any machine.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Bump to invalidate every cache entry (a change in how keys or entries are made).
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub schema: u32,
    pub kind: String,
    pub kind_version: u32,
    /// Checked params with defaults filled in (templates unexpanded).
    pub params: Value,
    /// Input name -> blake3 of content (`video`, `dep:tools/ocr.py`, ...).
    pub inputs: BTreeMap<String, String>,
    /// Upstream stage (and, for batch jobs, video folder) -> digest of its outputs.
    pub upstream: BTreeMap<String, String>,
    /// Tool and model versions (`ffmpeg`, `model:whisper-tiny.en`, ...).
    pub tools: BTreeMap<String, String>,
}

impl Fingerprint {
    /// The canonical JSON the key is the hash of. Written field by field, in sorted key
    /// order, without a `Value` tree in between; byte for byte what
    /// `write_canonical(&to_value(self))` gives (a test holds the two together), so keys
    /// never change with this shortcut.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut s = String::with_capacity(512);
        s.push_str("{\"inputs\":");
        write_str_map(&self.inputs, &mut s);
        s.push_str(",\"kind\":");
        write_json_str(&self.kind, &mut s);
        let _ = write!(s, ",\"kind_version\":{},\"params\":", self.kind_version);
        write_canonical(&self.params, &mut s);
        let _ = write!(s, ",\"schema\":{},\"tools\":", self.schema);
        write_str_map(&self.tools, &mut s);
        s.push_str(",\"upstream\":");
        write_str_map(&self.upstream, &mut s);
        s.push('}');
        s.into_bytes()
    }

    pub fn key(&self) -> String {
        blake3::hash(&self.canonical_bytes()).to_hex().to_string()
    }

    /// Human-readable differences from `old` to `self` (one line per changed leaf).
    pub fn diff(&self, old: &Fingerprint) -> Vec<String> {
        let mut a = BTreeMap::new();
        let mut b = BTreeMap::new();
        flatten("", &serde_json::to_value(old).expect("json"), &mut a);
        flatten("", &serde_json::to_value(self).expect("json"), &mut b);
        let mut out = Vec::new();
        for (k, va) in &a {
            match b.get(k) {
                None => out.push(format!("{k}: removed (was {va})")),
                Some(vb) if vb != va => out.push(format!("{k}: {va} -> {vb}")),
                _ => {}
            }
        }
        for (k, vb) in &b {
            if !a.contains_key(k) {
                out.push(format!("{k}: added ({vb})"));
            }
        }
        out
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), short(other));
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    // Hashes are long; 16 hex digits are plenty to tell two apart.
    if let Value::String(t) = v
        && t.len() == 64
        && t.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return format!("{}…", &t[..16]);
    }
    s
}

/// JSON with object keys sorted at every level, whatever map type serde_json uses.
pub fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(k, out);
                out.push(':');
                write_canonical(&m[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// A JSON string as serde_json writes it: plain text as it is, quotes, backslashes and
/// control characters escaped (by serde_json itself).
fn write_json_str(text: &str, out: &mut String) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        out.push_str(&Value::String(text.to_string()).to_string());
    }
}

/// A string-to-string map (sorted already, a `BTreeMap`) as canonical JSON.
fn write_str_map(map: &BTreeMap<String, String>, out: &mut String) {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(k, out);
        out.push(':');
        write_json_str(v, out);
    }
    out.push('}');
}

/// Digest of a job's outputs (sorted name -> content hash): what downstream keys see.
pub fn outputs_digest<'a>(outputs: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut h = blake3::Hasher::new();
    let mut sorted: Vec<_> = outputs.into_iter().collect();
    sorted.sort();
    for (name, hash) in sorted {
        h.update(name.as_bytes());
        h.update(&[0]);
        h.update(hash.as_bytes());
        h.update(&[0]);
    }
    h.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fp(params: Value) -> Fingerprint {
        Fingerprint {
            schema: SCHEMA,
            kind: "command".into(),
            kind_version: 1,
            params,
            inputs: BTreeMap::from([("video".into(), "ab".repeat(32))]),
            upstream: BTreeMap::new(),
            tools: BTreeMap::new(),
        }
    }

    #[test]
    fn key_ignores_key_order_and_is_stable() {
        let a = fp(json!({"b": 1, "a": [1, 2]}));
        let b = fp(serde_json::from_str(r#"{"a":[1,2],"b":1}"#).unwrap());
        assert_eq!(a.key(), b.key());
        // Pinned: changing how keys are made must be a deliberate SCHEMA bump.
        assert_eq!(
            String::from_utf8(a.canonical_bytes()).unwrap(),
            format!(
                r#"{{"inputs":{{"video":"{}"}},"kind":"command","kind_version":1,"params":{{"a":[1,2],"b":1}},"schema":1,"tools":{{}},"upstream":{{}}}}"#,
                "ab".repeat(32)
            )
        );
    }

    /// The written-out canonical form is byte for byte the `Value` route's, for text
    /// that needs escaping, non-ASCII, numbers of every kind and nested params.
    #[test]
    fn canonical_bytes_equal_the_value_routes() {
        let odd = "quote \" back \\ tab \t nl \n nul \u{0} del \u{7f} é 字 / 😀";
        let mut f = fp(json!({
            "z": {"nested": [1, -2, 3.5, 1e300, -0.0, true, null, odd], "a": {}},
            odd: [[], {}],
            "": "",
            "big": u64::MAX,
            "neg": i64::MIN,
        }));
        f.kind = odd.into();
        f.inputs.insert(odd.into(), odd.into());
        f.inputs.insert("dep:tools/ocr.py".into(), "cd".repeat(32));
        f.upstream
            .insert("scenes/talk 1.mp4".into(), "ef".repeat(32));
        f.tools
            .insert("model:whisper-tiny.en".into(), "\u{1}x".into());
        for f in [f, fp(json!({})), fp(json!(null)), fp(json!([1, "a"]))] {
            // serde_json's own writer on the `Value` (its maps are sorted): an oracle
            // that shares no code with `canonical_bytes` or `write_canonical`.
            let v = serde_json::to_value(&f).unwrap();
            let oracle = serde_json::to_string(&v).unwrap();
            let mut via_value = String::new();
            write_canonical(&v, &mut via_value);
            assert_eq!(via_value, oracle);
            assert_eq!(String::from_utf8(f.canonical_bytes()).unwrap(), oracle);
        }
    }

    #[test]
    fn diff_names_the_changed_leaf() {
        let old = fp(json!({"run": ["wc", "-c"]}));
        let new = fp(json!({"run": ["wc", "-l"]}));
        assert_eq!(new.diff(&old), vec![r#"params.run[1]: "-c" -> "-l""#]);
        assert!(new.diff(&new).is_empty());
    }

    #[test]
    fn digest_depends_on_names_and_contents() {
        let (a, b, h1, h2) = (
            "a".to_string(),
            "b".to_string(),
            "1".to_string(),
            "2".to_string(),
        );
        let d1 = outputs_digest([(&a, &h1), (&b, &h2)]);
        let d2 = outputs_digest([(&b, &h2), (&a, &h1)]);
        let d3 = outputs_digest([(&a, &h2), (&b, &h1)]);
        assert_eq!(d1, d2);
        assert_ne!(d1, d3);
    }
}
