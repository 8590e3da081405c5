//! Placeholders in manifest strings: `{video}`, `{stem}`, `{out}`, `{videos}`, `{<stage>}`.
//!
//! Part of the manifest contract, so it lives in the engine: validation checks that
//! every placeholder names something the stage can see, and stage kinds expand them.
//! `{{` and `}}` stand for literal braces.

/// A piece of a template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Var(String),
}

/// Placeholders every per-video job can use.
pub const VIDEO_VARS: [&str; 3] = ["video", "stem", "out"];

/// Splits a template into text and placeholders.
pub fn parse(s: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => {
                            return Err(format!(
                                "unclosed placeholder '{{{name}' (write '{{{{' for a literal brace)"
                            ));
                        }
                    }
                }
                if name.is_empty() || name.contains('{') {
                    return Err(format!("bad placeholder '{{{name}}}'"));
                }
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(Piece::Var(name));
            }
            '}' => return Err("stray '}' (write '}}' for a literal brace)".into()),
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// The placeholder names used in a template (errors ignored).
pub fn vars(s: &str) -> Vec<String> {
    parse(s)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var(v) => Some(v),
            Piece::Text(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_vars_and_escapes() {
        assert_eq!(
            parse("a{out}/b{{c}}").unwrap(),
            vec![
                Piece::Text("a".into()),
                Piece::Var("out".into()),
                Piece::Text("/b{c}".into())
            ]
        );
        assert!(parse("{out").is_err());
        assert!(parse("x}").is_err());
        assert_eq!(vars("{size}/size.txt"), vec!["size".to_string()]);
    }
}
