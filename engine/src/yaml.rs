//! A YAML tree that remembers where every node came from.
//!
//! Manifests must report *all* their errors at once, each pointing at `file:line:col`.
//! serde-based YAML loaders stop at the first error and forget positions, so the
//! manifest and config loaders walk this tree instead and convert leaf values (e.g. a
//! stage's `with:` block) to JSON only once their position is known.

use std::collections::BTreeMap;

use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn from_marker(m: Marker) -> Self {
        // yaml-rust2 reports 1-based lines and 0-based columns.
        Pos {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

/// A scalar as written: its text and whether it was quoted (quoted text is always a string).
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub text: String,
    pub quoted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Keys in source order, with the position of each key.
    Map(Vec<(String, Pos, Node)>),
    /// An alias (`*name`): resolved to a copy of the anchored node when possible.
    Null,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: NodeKind,
}

/// A duplicate mapping key found while parsing (YAML forbids them, the loader keeps the first).
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateKey {
    pub key: String,
    pub pos: Pos,
    pub first: Pos,
}

#[derive(Debug, Clone)]
pub struct ParseError {
    pub pos: Pos,
    pub message: String,
}

/// Parses one YAML document. An empty document is an empty mapping.
pub fn parse(src: &str) -> Result<(Node, Vec<DuplicateKey>), ParseError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(src);
    parser.load(&mut builder, false).map_err(|e| ParseError {
        pos: Pos::from_marker(*e.marker()),
        message: e.info().to_string(),
    })?;
    let root = builder.root.unwrap_or(Node {
        pos: Pos { line: 1, col: 1 },
        kind: NodeKind::Map(Vec::new()),
    });
    Ok((root, builder.duplicates))
}

enum Frame {
    Seq(Pos, Vec<Node>, usize),
    Map(Pos, Vec<(String, Pos, Node)>, Option<(String, Pos)>, usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: BTreeMap<usize, Node>,
    duplicates: Vec<DuplicateKey>,
}

impl Builder {
    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(_, items, _)) => items.push(node),
            Some(Frame::Map(_, entries, pending, _)) => match pending.take() {
                None => {
                    let key = match &node.kind {
                        NodeKind::Scalar(s) => s.text.clone(),
                        _ => String::from("<complex key>"),
                    };
                    *pending = Some((key, node.pos));
                }
                Some((key, key_pos)) => {
                    if let Some((_, first, _)) = entries.iter().find(|(k, _, _)| *k == key) {
                        self.duplicates.push(DuplicateKey {
                            key,
                            pos: key_pos,
                            first: *first,
                        });
                    } else {
                        entries.push((key, key_pos, node));
                    }
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from_marker(mark);
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.push_node(
                    Node {
                        pos,
                        kind: NodeKind::Scalar(Scalar { text, quoted }),
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(pos, Vec::new(), anchor)),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(pos, Vec::new(), None, anchor))
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(p, items, anchor)) = self.stack.pop() {
                    self.push_node(
                        Node {
                            pos: p,
                            kind: NodeKind::Seq(items),
                        },
                        anchor,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(p, entries, _, anchor)) = self.stack.pop() {
                    self.push_node(
                        Node {
                            pos: p,
                            kind: NodeKind::Map(entries),
                        },
                        anchor,
                    );
                }
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().unwrap_or(Node {
                    pos,
                    kind: NodeKind::Null,
                });
                self.push_node(Node { pos, ..node }, 0);
            }
            _ => {}
        }
    }
}

impl Node {
    pub fn as_map(&self) -> Option<&[(String, Pos, Node)]> {
        match &self.kind {
            NodeKind::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The text of a scalar that is a string (quoted, or plain and not a number/bool/null).
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar(s) if s.quoted => Some(&s.text),
            NodeKind::Scalar(s) => match Yaml::from_str(&s.text) {
                Yaml::String(_) => Some(&s.text),
                _ => None,
            },
            _ => None,
        }
    }

    /// Any scalar's text, whatever its YAML type (`1` -> "1").
    pub fn scalar_text(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar(s) => Some(&s.text),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        match &self.kind {
            NodeKind::Null => true,
            NodeKind::Scalar(s) => !s.quoted && matches!(Yaml::from_str(&s.text), Yaml::Null),
            _ => false,
        }
    }

    /// A short name of the node's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Map(_) => "a mapping",
            NodeKind::Seq(_) => "a list",
            NodeKind::Null => "null",
            NodeKind::Scalar(_) => match self.to_json() {
                serde_json::Value::Null => "null",
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Number(_) => "a number",
                _ => "a string",
            },
        }
    }

    /// Converts to JSON with YAML 1.2 core-schema typing of plain scalars.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Scalar(s) if s.quoted => Value::String(s.text.clone()),
            NodeKind::Scalar(s) => match Yaml::from_str(&s.text) {
                Yaml::Integer(i) => Value::from(i),
                Yaml::Real(r) => r
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or_else(|| Value::String(r)),
                Yaml::Boolean(b) => Value::Bool(b),
                Yaml::Null => Value::Null,
                _ => Value::String(s.text.clone()),
            },
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, _, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Finds the position of a JSON-pointer-like path below this node (`run/2`, `with/model`),
    /// falling back to the deepest node that exists.
    pub fn locate(&self, path: &[String]) -> Pos {
        let mut node = self;
        let mut pos = self.pos;
        for seg in path {
            let next = match &node.kind {
                NodeKind::Map(entries) => entries
                    .iter()
                    .find(|(k, _, _)| k == seg)
                    .map(|(_, kp, v)| (*kp, v)), // a key: point at the key
                NodeKind::Seq(items) => seg
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| items.get(i))
                    .map(|v| (v.pos, v)),
                _ => None,
            };
            match next {
                Some((p, n)) => {
                    pos = p;
                    node = n;
                }
                None => break,
            }
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_point_at_keys_and_values() {
        let (root, dups) = parse("name: x\nstages:\n  a:\n    run: [echo, '1']\n").unwrap();
        assert!(dups.is_empty());
        let map = root.as_map().unwrap();
        assert_eq!(map[0].1, Pos { line: 1, col: 1 });
        assert_eq!(map[1].1, Pos { line: 2, col: 1 });
        let stages = map[1].2.as_map().unwrap();
        assert_eq!(stages[0].1, Pos { line: 3, col: 3 });
        let run = &stages[0].2.as_map().unwrap()[0].2;
        assert_eq!(run.as_seq().unwrap()[1].pos, Pos { line: 4, col: 17 });
        assert_eq!(run.as_seq().unwrap()[1].as_str(), Some("1"));
    }

    #[test]
    fn typing_follows_yaml_core_schema() {
        let (root, _) = parse("a: 1\nb: '1'\nc: true\nd: ~\ne: 1.5\nf: hi\n").unwrap();
        let j = root.to_json();
        assert_eq!(
            j,
            serde_json::json!({"a":1,"b":"1","c":true,"d":null,"e":1.5,"f":"hi"})
        );
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_positions() {
        let (_, dups) = parse("stages:\n  a: {}\n  a: {}\n").unwrap();
        assert_eq!(dups.len(), 1);
        assert_eq!(dups[0].key, "a");
        assert_eq!(dups[0].pos.line, 3);
        assert_eq!(dups[0].first.line, 2);
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse("a: [1, 2\nb: c\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }
}
