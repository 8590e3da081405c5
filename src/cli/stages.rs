//! `vsum stages`: the built-in stage kinds and their parameters, in words a user reads
//! (never a Rust type name such as `u32`).

use serde_json::json;
use vsum_engine::stage::{ParamDoc, Registry};

use super::common::print_json;

/// A parameter's type in words: Rust type names become what a manifest writer types.
pub fn friendly_type(ty: &str) -> String {
    let ty = ty.trim();
    if let Some(inner) = ty.strip_prefix("Option<").and_then(|t| t.strip_suffix('>')) {
        return friendly_type(inner);
    }
    if let Some(inner) = ty.strip_prefix("Vec<").and_then(|t| t.strip_suffix('>')) {
        return format!("list of {}s", friendly_type(inner));
    }
    match ty {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "whole number".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "integer".into(),
        "f32" | "f64" => "number".into(),
        "bool" | "boolean" => "true or false".into(),
        "String" | "str" | "&str" | "&'static str" => "text".into(),
        "PathBuf" | "Path" => "path".into(),
        other => other.to_string(),
    }
}

fn params_json(params: &[ParamDoc]) -> Vec<serde_json::Value> {
    params
        .iter()
        .map(|p| json!({"name": p.name, "ty": friendly_type(p.ty.trim()), "default": &p.default, "doc": p.doc}))
        .collect()
}

/// Prints the kinds, as aligned text or JSON.
pub fn cmd(registry: &Registry, json: bool) {
    if json {
        let v: Vec<_> = registry
            .kinds()
            .map(|k| {
                json!({
                    "name": k.name(), "version": k.version(), "lane": k.default_lane(),
                    "summary": k.summary(), "params": params_json(&k.params_doc()),
                })
            })
            .collect();
        print_json(&v);
        return;
    }
    for k in registry.kinds() {
        println!(
            "{} (v{}, {} lane): {}",
            k.name(),
            k.version(),
            k.default_lane(),
            k.summary()
        );
        let params = k.params_doc();
        let types: Vec<String> = params.iter().map(|p| friendly_type(p.ty.trim())).collect();
        let nw = params
            .iter()
            .map(|p| p.name.chars().count())
            .max()
            .unwrap_or(0);
        let tw = types.iter().map(|t| t.chars().count()).max().unwrap_or(0);
        for (p, ty) in params.iter().zip(&types) {
            let d = p
                .default
                .as_ref()
                .map(|d| format!(" [default: {d}]"))
                .unwrap_or_default();
            println!("    {:<nw$}  {:<tw$}  {}{d}", p.name, ty, p.doc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::friendly_type;

    #[test]
    fn rust_type_names_become_words() {
        assert_eq!(friendly_type("u32"), "whole number");
        assert_eq!(friendly_type("Option<f64>"), "number");
        assert_eq!(friendly_type("Vec<String>"), "list of texts");
        assert_eq!(friendly_type("bool"), "true or false");
        assert_eq!(friendly_type("seconds"), "seconds");
    }
}
