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
    /// The file passed a size, depth or alias-expansion limit (not a syntax error).
    pub limit: bool,
}

impl ParseError {
    /// The message as shown to users.
    pub fn headline(&self) -> String {
        if self.limit {
            format!("refused: {}", self.message)
        } else {
            format!("YAML syntax error: {}", self.message)
        }
    }
}

/// Limits that keep a hostile file from exhausting the machine: aliases (`*a`) copy
/// their anchor, so a few hundred bytes of nested aliases can name billions of nodes.
/// Every node and scalar byte counts after expansion; a file past a limit is refused.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;
pub const MAX_NODES: usize = 100_000;
pub const MAX_EXPANDED_BYTES: usize = 16 << 20;
pub const MAX_DEPTH: usize = 64;

/// Parses one YAML document. An empty document is an empty mapping.
pub fn parse(src: &str) -> Result<(Node, Vec<DuplicateKey>), ParseError> {
    if src.len() > MAX_SOURCE_BYTES {
        return Err(ParseError {
            pos: Pos { line: 1, col: 1 },
            message: format!(
                "the file is {} bytes; vsum reads YAML files of at most {MAX_SOURCE_BYTES} bytes",
                src.len()
            ),
            limit: true,
        });
    }
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(src);
    // Events are pulled one by one (yaml-rust2's `load` recurses once per level, which
    // deep block nesting turns into a stack overflow), and stop at the first limit.
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| ParseError {
            pos: Pos::from_marker(*e.marker()),
            message: e.info().to_string(),
            limit: false,
        })?;
        let end = matches!(ev, Event::DocumentEnd | Event::StreamEnd);
        builder.on_event(ev, mark);
        if let Some(e) = builder.limit.take() {
            return Err(e);
        }
        if end {
            break;
        }
    }
    let root = builder.root.unwrap_or(Node {
        pos: Pos { line: 1, col: 1 },
        kind: NodeKind::Map(Vec::new()),
    });
    Ok((root, builder.duplicates))
}

/// How much of the tree a node stands for: nodes and scalar bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Weight {
    nodes: usize,
    bytes: usize,
}

enum Frame {
    Seq(Pos, Vec<Node>, usize, Weight),
    Map(
        Pos,
        Vec<(String, Pos, Node)>,
        Option<(String, Pos)>,
        usize,
        Weight,
    ),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: BTreeMap<usize, (Node, Weight)>,
    duplicates: Vec<DuplicateKey>,
    /// Everything built so far, aliases expanded.
    total: Weight,
    /// Set when a limit is passed; parsing stops there.
    limit: Option<ParseError>,
}

impl Builder {
    /// Counts `w` more; false (and the error recorded) when a limit is passed.
    fn charge(&mut self, w: Weight, pos: Pos, alias: bool) -> bool {
        self.total.nodes += w.nodes;
        self.total.bytes += w.bytes;
        let over = if self.total.nodes > MAX_NODES {
            Some(format!("more than {MAX_NODES} nodes"))
        } else if self.total.bytes > MAX_EXPANDED_BYTES {
            Some(format!("more than {MAX_EXPANDED_BYTES} bytes of text"))
        } else {
            None
        };
        match over {
            None => true,
            Some(what) => {
                let cause = if alias {
                    "its aliases (`*name`) expand to"
                } else {
                    "it holds"
                };
                self.limit = Some(ParseError {
                    pos,
                    message: format!(
                        "the document is too large: {cause} {what}; write the values out, or use fewer and smaller aliases"
                    ),
                    limit: true,
                });
                false
            }
        }
    }

    fn push_node(&mut self, node: Node, anchor: usize, weight: Weight) {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), weight));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(_, items, _, w)) => {
                w.nodes += weight.nodes;
                w.bytes += weight.bytes;
                items.push(node);
            }
            Some(Frame::Map(_, entries, pending, _, w)) => {
                w.nodes += weight.nodes;
                w.bytes += weight.bytes;
                match pending.take() {
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
                }
            }
        }
    }

    fn open(&mut self, frame: Frame, pos: Pos) {
        if self.stack.len() >= MAX_DEPTH {
            self.limit = Some(ParseError {
                pos,
                message: format!("the document nests deeper than {MAX_DEPTH} levels; flatten it"),
                limit: true,
            });
            return;
        }
        if self.charge(Weight { nodes: 1, bytes: 0 }, pos, false) {
            self.stack.push(frame);
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.limit.is_some() {
            return;
        }
        let pos = Pos::from_marker(mark);
        let one = Weight { nodes: 1, bytes: 0 };
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let w = Weight {
                    nodes: 1,
                    bytes: text.len(),
                };
                if !self.charge(w, pos, false) {
                    return;
                }
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.push_node(
                    Node {
                        pos,
                        kind: NodeKind::Scalar(Scalar { text, quoted }),
                    },
                    anchor,
                    w,
                );
            }
            Event::SequenceStart(anchor, _) => {
                self.open(Frame::Seq(pos, Vec::new(), anchor, one), pos)
            }
            Event::MappingStart(anchor, _) => {
                self.open(Frame::Map(pos, Vec::new(), None, anchor, one), pos)
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(p, items, anchor, w)) = self.stack.pop() {
                    self.push_node(
                        Node {
                            pos: p,
                            kind: NodeKind::Seq(items),
                        },
                        anchor,
                        w,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(p, entries, _, anchor, w)) = self.stack.pop() {
                    self.push_node(
                        Node {
                            pos: p,
                            kind: NodeKind::Map(entries),
                        },
                        anchor,
                        w,
                    );
                }
            }
            Event::Alias(id) => {
                let (w, below) = self
                    .anchors
                    .get(&id)
                    .map_or((one, 0), |(n, w)| (*w, depth(n)));
                // Counted before the copy is made: a copy past a limit never exists.
                if self.stack.len() + below > MAX_DEPTH {
                    self.limit = Some(ParseError {
                        pos,
                        message: format!(
                            "the document nests deeper than {MAX_DEPTH} levels (through an alias); flatten it"
                        ),
                        limit: true,
                    });
                    return;
                }
                if !self.charge(w, pos, true) {
                    return;
                }
                let node = self
                    .anchors
                    .get(&id)
                    .map(|(n, _)| n.clone())
                    .unwrap_or(Node {
                        pos,
                        kind: NodeKind::Null,
                    });
                self.push_node(Node { pos, ..node }, 0, w);
            }
            _ => {}
        }
    }
}

/// Levels of nesting below a node (0 for a scalar).
fn depth(n: &Node) -> usize {
    match &n.kind {
        NodeKind::Seq(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        NodeKind::Map(entries) => 1 + entries.iter().map(|(_, _, v)| depth(v)).max().unwrap_or(0),
        _ => 0,
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
    fn alias_bombs_deep_nesting_and_huge_files_are_refused() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            bomb.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                vec![format!("*a{}", i - 1); 10].join(", ")
            ));
        }
        let e = parse(&bomb).unwrap_err();
        assert!(e.message.contains("aliases"), "{}", e.message);
        // Block sequences nest one level per "- ": far past any stack, never recursed.
        let deep = format!("{}x\n", "- ".repeat(200_000));
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("deeper than"), "{}", e.message);
        let e = parse(&format!("a: {}\n", "[".repeat(100))).unwrap_err();
        assert!(e.message.contains("deeper than"), "{}", e.message);
        let big = format!("a: '{}'\n", "x".repeat(MAX_SOURCE_BYTES));
        assert!(parse(&big).unwrap_err().message.contains("at most"));
        // Aliases within bounds still work.
        let (root, _) = parse("a: &x [1, 2]\nb: *x\n").unwrap();
        assert_eq!(
            root.to_json(),
            serde_json::json!({"a": [1, 2], "b": [1, 2]})
        );
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse("a: [1, 2\nb: c\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }
}
