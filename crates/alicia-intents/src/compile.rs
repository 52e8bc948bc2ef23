//! Compiling intents data: every sentence template parsed, its rules inlined, permutations
//! expanded, into one graph of nodes shared by all sentences (a DAG: alternatives share their
//! continuation), with static lists expanded to normalised strings and, per sentence, the
//! literal fragments an utterance must contain for the sentence to have a chance (the
//! prefilter that lets the matcher skip most of the ~900 English sentences at once).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::data::{DataBlock, IntentsData, ListDef, ListValueDef, Source};
use crate::normalize::{normalize_fragment, normalize_words};
use crate::template::{self, Expr, ListRef, TemplateError};

pub(crate) type NodeId = u32;
/// The node every sentence ends in.
pub(crate) const END: NodeId = 0;

#[derive(Debug, Clone)]
pub(crate) enum Node {
    End,
    /// Literal, normalised text; spaces in it are word boundaries.
    Text {
        text: Box<str>,
        literal: u32,
        next: NodeId,
    },
    /// Alternatives: `edges[first..first + count]`.
    Split {
        first: u32,
        count: u32,
    },
    List {
        list: u32,
        slot: u32,
        capture: bool,
        next: NodeId,
    },
}

/// A static list value: normalised text and what it puts in the slot.
#[derive(Debug, Clone)]
pub(crate) struct StaticValue {
    pub text: String,
    pub value: Value,
    pub context: BTreeMap<String, Value>,
}

#[derive(Debug, Clone)]
pub(crate) struct RangeSpec {
    pub from: i64,
    pub to: i64,
    pub step: i64,
    /// Fractions allowed after the integer (0.5 for halves).
    pub fractions: Vec<f64>,
    pub multiplier: Option<f64>,
    pub digits: bool,
    pub words: bool,
}

impl RangeSpec {
    /// The slot value for a number heard, or None if out of the range.
    pub fn value(&self, n: f64) -> Option<Value> {
        let whole = n.floor();
        let frac = n - whole;
        let whole_i = whole as i64;
        if whole_i < self.from || whole_i > self.to || (whole_i - self.from) % self.step != 0 {
            return None;
        }
        if frac.abs() > 1e-9 && (whole_i == self.to || !self.fractions.iter().any(|f| (f - frac).abs() < 1e-6)) {
            return None;
        }
        let v = match self.multiplier {
            Some(m) => n * m,
            None => n,
        };
        Some(number_value(v))
    }
}

/// An integral number as a JSON integer, others as floats.
pub(crate) fn number_value(v: f64) -> Value {
    if (v - v.round()).abs() < 1e-9 && v.abs() < 9e15 {
        Value::from(v.round() as i64)
    } else {
        Value::from((v * 1e6).round() / 1e6)
    }
}

#[derive(Debug, Clone)]
pub(crate) enum ListKind {
    Values(Vec<StaticValue>),
    Range(RangeSpec),
    Wildcard,
    /// Filled at match time from the [`crate::HomeIndex`]: `name`, `area`, `floor`, others.
    Runtime(String),
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledList {
    pub kind: ListKind,
}

/// A data block, as the results need it.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub intent: String,
    pub source: Source,
    pub index: usize,
    pub data: DataBlock,
}

#[derive(Debug, Clone)]
pub(crate) struct Sentence {
    pub block: u32,
    pub index: u32,
    pub template: String,
    pub start: NodeId,
    /// Each clause: at least one of these fragments must occur in the utterance.
    pub clauses: Vec<Vec<u32>>,
    pub has_wildcard: bool,
}

/// A template or data problem, naming where it is.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CompileError {
    #[error("{source_name}: intent {intent}, data block {block}, sentence {sentence}: {error}")]
    Sentence { source_name: String, intent: String, block: usize, sentence: usize, error: TemplateError },
    #[error("{source_name}: intent {intent}, data block {block}, sentence {sentence} {template:?}: {message}")]
    Reference { source_name: String, intent: String, block: usize, sentence: usize, template: String, message: String },
    #[error("expansion rule <{rule}>: {error}")]
    Rule { rule: String, error: TemplateError },
    #[error("list {{{list}}}: {message}")]
    List { list: String, message: String },
}

/// The compiled form of all sentences.
#[derive(Debug, Clone, Default)]
pub(crate) struct Program {
    pub nodes: Vec<Node>,
    pub edges: Vec<NodeId>,
    pub lists: Vec<CompiledList>,
    pub slots: Vec<String>,
    pub fragments: Vec<String>,
    pub blocks: Vec<Block>,
    pub sentences: Vec<Sentence>,
}

struct Compiler<'a> {
    prog: Program,
    rules: HashMap<String, Expr>,
    global_lists: &'a BTreeMap<String, ListDef>,
    list_ids: HashMap<String, u32>,
    slot_ids: HashMap<String, u32>,
    fragment_ids: HashMap<String, u32>,
}

pub(crate) fn compile(data: &IntentsData) -> Result<Program, CompileError> {
    let mut rules = HashMap::new();
    for (name, body) in &data.expansion_rules {
        let expr = template::parse(body).map_err(|error| CompileError::Rule { rule: name.clone(), error })?;
        rules.insert(name.clone(), expr);
    }
    let mut c = Compiler {
        prog: Program { nodes: vec![Node::End], ..Default::default() },
        rules,
        global_lists: &data.lists,
        list_ids: HashMap::new(),
        slot_ids: HashMap::new(),
        fragment_ids: HashMap::new(),
    };
    for (intent, blocks) in &data.intents {
        for (bi, (source, block)) in blocks.iter().enumerate() {
            c.block(intent, bi, source, block)?;
        }
    }
    Ok(c.prog)
}

impl Compiler<'_> {
    fn block(&mut self, intent: &str, bi: usize, source: &Source, block: &DataBlock) -> Result<(), CompileError> {
        let block_id = self.prog.blocks.len() as u32;
        self.prog.blocks.push(Block {
            intent: intent.to_string(),
            source: source.clone(),
            index: bi,
            data: block.clone(),
        });
        // Block-local rules shadow global ones while this block compiles.
        let mut local_rules = HashMap::new();
        for (name, body) in &block.expansion_rules {
            let expr = template::parse(body).map_err(|error| CompileError::Rule { rule: name.clone(), error })?;
            local_rules.insert(name.clone(), expr);
        }
        for (si, text) in block.sentences.iter().enumerate() {
            let reference_error = |message: String| CompileError::Reference {
                source_name: source.0.clone(),
                intent: intent.to_string(),
                block: bi,
                sentence: si,
                template: text.clone(),
                message,
            };
            let expr = template::parse(text).map_err(|error| CompileError::Sentence {
                source_name: source.0.clone(),
                intent: intent.to_string(),
                block: bi,
                sentence: si,
                error,
            })?;
            let expr = self.expand(&expr, &local_rules, &mut Vec::new()).map_err(reference_error)?;
            let mut has_wildcard = false;
            let start = self.node(&expr, END, block, &mut has_wildcard).map_err(reference_error)?;
            let clauses = self.clauses(&expr);
            self.prog.sentences.push(Sentence {
                block: block_id,
                index: si as u32,
                template: text.clone(),
                start,
                clauses,
                has_wildcard,
            });
        }
        Ok(())
    }

    /// Inlines rules (recursively, refusing cycles) and expands permutations into
    /// alternatives of every order, words separated by spaces as hassil does.
    fn expand(&self, e: &Expr, local: &HashMap<String, Expr>, stack: &mut Vec<String>) -> Result<Expr, String> {
        Ok(match e {
            Expr::Text(_) | Expr::List(_) => e.clone(),
            Expr::Seq(items) => {
                Expr::Seq(items.iter().map(|i| self.expand(i, local, stack)).collect::<Result<_, _>>()?)
            }
            Expr::Alt { items, optional } => Expr::Alt {
                items: items.iter().map(|i| self.expand(i, local, stack)).collect::<Result<_, _>>()?,
                optional: *optional,
            },
            Expr::Perm(items) => {
                let items: Vec<Expr> = items.iter().map(|i| self.expand(i, local, stack)).collect::<Result<_, _>>()?;
                let mut orders = Vec::new();
                permutations(&mut (0..items.len()).collect::<Vec<_>>(), 0, &mut orders);
                Expr::Alt {
                    items: orders
                        .into_iter()
                        .map(|order| {
                            let mut seq = vec![Expr::Text(" ".into())];
                            for i in order {
                                seq.push(items[i].clone());
                                seq.push(Expr::Text(" ".into()));
                            }
                            Expr::Seq(seq)
                        })
                        .collect(),
                    optional: false,
                }
            }
            Expr::Rule(name) => {
                if stack.contains(name) {
                    return Err(format!("expansion rule <{name}> refers to itself (through {})", stack.join(" → ")));
                }
                let body = local.get(name).or_else(|| self.rules.get(name));
                let Some(body) = body else {
                    return Err(format!("expansion rule <{name}> is not defined"));
                };
                stack.push(name.clone());
                let out = self.expand(body, local, stack);
                stack.pop();
                out?
            }
        })
    }

    fn push(&mut self, n: Node) -> NodeId {
        self.prog.nodes.push(n);
        (self.prog.nodes.len() - 1) as NodeId
    }

    /// Builds the nodes of `e` followed by `next`; returns the first node.
    fn node(&mut self, e: &Expr, next: NodeId, block: &DataBlock, wild: &mut bool) -> Result<NodeId, String> {
        Ok(match e {
            Expr::Text(t) => {
                let text = normalize_fragment(t);
                if text.is_empty() {
                    return Ok(next);
                }
                let literal = text.bytes().filter(|&b| b != b' ').count() as u32;
                self.push(Node::Text { text: text.into_boxed_str(), literal, next })
            }
            Expr::Seq(items) => {
                let mut at = next;
                for item in items.iter().rev() {
                    at = self.node(item, at, block, wild)?;
                }
                at
            }
            Expr::Alt { items, optional } => {
                let mut targets = Vec::with_capacity(items.len() + 1);
                for item in items {
                    let t = self.node(item, next, block, wild)?;
                    if !targets.contains(&t) {
                        targets.push(t);
                    }
                }
                if *optional && !targets.contains(&next) {
                    targets.push(next);
                }
                if targets.len() == 1 {
                    return Ok(targets[0]);
                }
                let first = self.prog.edges.len() as u32;
                let count = targets.len() as u32;
                self.prog.edges.extend(targets);
                self.push(Node::Split { first, count })
            }
            Expr::Perm(_) | Expr::Rule(_) => unreachable!("expanded before"),
            Expr::List(l) => {
                let list = self.list(l, block)?;
                if matches!(self.prog.lists[list as usize].kind, ListKind::Wildcard) {
                    *wild = true;
                }
                let slot = self.slot(&l.slot);
                self.push(Node::List { list, slot, capture: l.capture, next })
            }
        })
    }

    fn slot(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.slot_ids.get(name) {
            return id;
        }
        let id = self.prog.slots.len() as u32;
        self.prog.slots.push(name.to_string());
        self.slot_ids.insert(name.to_string(), id);
        id
    }

    fn list(&mut self, l: &ListRef, block: &DataBlock) -> Result<u32, String> {
        if let Some((from, to, step)) = l.inline_range {
            let key = format!("{from}..{to},{step}");
            return self.intern_list(key, || {
                Ok(ListKind::Range(RangeSpec {
                    from,
                    to,
                    step,
                    fractions: vec![],
                    multiplier: None,
                    digits: true,
                    words: true,
                }))
            });
        }
        // A block's own list shadows the global one of the same name.
        if let Some(def) = block.lists.get(&l.list) {
            let def = def.clone();
            let key = format!("{}#{}", l.list, self.prog.blocks.len() - 1);
            return self.intern_list(key, || list_kind(&l.list, &def));
        }
        let name = l.list.clone();
        match self.global_lists.get(&name) {
            Some(def) => {
                let def = def.clone();
                self.intern_list(name.clone(), || list_kind(&name, &def))
            }
            None => self.intern_list(name.clone(), || Ok(ListKind::Runtime(name.clone()))),
        }
    }

    fn intern_list(&mut self, key: String, make: impl FnOnce() -> Result<ListKind, String>) -> Result<u32, String> {
        if let Some(&id) = self.list_ids.get(&key) {
            return Ok(id);
        }
        let kind = make()?;
        let id = self.prog.lists.len() as u32;
        self.prog.lists.push(CompiledList { kind });
        self.list_ids.insert(key, id);
        Ok(id)
    }

    fn fragment(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.fragment_ids.get(text) {
            return id;
        }
        let id = self.prog.fragments.len() as u32;
        self.prog.fragments.push(text.to_string());
        self.fragment_ids.insert(text.to_string(), id);
        id
    }

    /// The prefilter: clauses of fragments (any one of each clause must occur).
    fn clauses(&mut self, e: &Expr) -> Vec<Vec<u32>> {
        let raw = required(e);
        let mut out: Vec<Vec<u32>> = Vec::new();
        for clause in raw {
            let mut ids: Vec<u32> = clause.iter().map(|f| self.fragment(f)).collect();
            ids.sort_unstable();
            ids.dedup();
            if !out.contains(&ids) {
                out.push(ids);
            }
        }
        out
    }
}

/// Clauses of literal fragments an utterance needs to match `e`.
fn required(e: &Expr) -> Vec<Vec<String>> {
    match e {
        Expr::Text(t) => {
            let f = normalize_fragment(t);
            let f = f.trim();
            if f.is_empty() {
                vec![]
            } else {
                vec![vec![f.to_string()]]
            }
        }
        Expr::Seq(items) | Expr::Perm(items) => items.iter().flat_map(required).collect(),
        Expr::Alt { optional: true, .. } | Expr::List(_) | Expr::Rule(_) => vec![],
        Expr::Alt { items, optional: false } => {
            // One clause: the union of one clause from every branch (the one with the fewest
            // fragments). A branch with none makes the alternative require nothing.
            let mut union = Vec::new();
            for item in items {
                let clauses = required(item);
                let Some(best) = clauses.into_iter().min_by_key(|c| c.len()) else { return vec![] };
                union.extend(best);
            }
            if union.len() > 24 {
                return vec![];
            }
            vec![union]
        }
    }
}

fn permutations(items: &mut Vec<usize>, k: usize, out: &mut Vec<Vec<usize>>) {
    if k == items.len() {
        out.push(items.clone());
        return;
    }
    for i in k..items.len() {
        items.swap(k, i);
        permutations(items, k + 1, out);
        items.swap(k, i);
    }
}

fn list_kind(name: &str, def: &ListDef) -> Result<ListKind, String> {
    Ok(match def {
        ListDef::Wildcard { wildcard: true } => ListKind::Wildcard,
        ListDef::Wildcard { wildcard: false } => {
            return Err(format!("list {{{name}}}: `wildcard: false` defines nothing"))
        }
        ListDef::Range { range } => {
            let step = range.step.unwrap_or(1);
            if step <= 0 || range.from > range.to {
                return Err(format!("list {{{name}}}: range {}..{} step {step} is empty", range.from, range.to));
            }
            let fractions = match range.fractions.as_deref() {
                None => vec![],
                Some("halves") => vec![0.5],
                Some("tenths") => (1..10).map(|i| f64::from(i) / 10.0).collect(),
                Some(other) => return Err(format!("list {{{name}}}: unknown fractions {other:?} (halves, tenths)")),
            };
            ListKind::Range(RangeSpec {
                from: range.from,
                to: range.to,
                step,
                fractions,
                multiplier: range.multiplier,
                digits: range.digits.unwrap_or(true),
                words: range.words.unwrap_or(true),
            })
        }
        ListDef::Values { values } => {
            let mut out = Vec::new();
            for v in values {
                let (text_in, value, context) = match v {
                    ListValueDef::Text(t) => (t.as_str(), Value::from(t.as_str()), BTreeMap::new()),
                    ListValueDef::Mapped { text_in, value_out, context, .. } => {
                        (text_in.as_str(), value_out.clone(), context.clone())
                    }
                };
                let expr = template::parse(text_in).map_err(|e| format!("list {{{name}}}: {e}"))?;
                let mut texts = Vec::new();
                expand_strings(&expr, &mut texts).map_err(|m| format!("list {{{name}}}, value {text_in:?}: {m}"))?;
                for t in texts {
                    let t = normalize_words(&t);
                    if !t.is_empty() {
                        out.push(StaticValue { text: t, value: value.clone(), context: context.clone() });
                    }
                }
            }
            ListKind::Values(out)
        }
    })
}

/// Every string a list value's `in` template stands for ("(closed|shut)" → two).
fn expand_strings(e: &Expr, out: &mut Vec<String>) -> Result<(), String> {
    fn go(e: &Expr) -> Result<Vec<String>, String> {
        Ok(match e {
            Expr::Text(t) => vec![t.clone()],
            Expr::Seq(items) => {
                let mut acc = vec![String::new()];
                for i in items {
                    let parts = go(i)?;
                    let mut next = Vec::with_capacity(acc.len() * parts.len());
                    for a in &acc {
                        for p in &parts {
                            next.push(format!("{a}{p}"));
                        }
                    }
                    if next.len() > 512 {
                        return Err("expands to more than 512 texts".into());
                    }
                    acc = next;
                }
                acc
            }
            Expr::Alt { items, optional } => {
                let mut v = Vec::new();
                for i in items {
                    v.extend(go(i)?);
                }
                if *optional {
                    v.push(String::new());
                }
                v
            }
            Expr::Perm(_) => return Err("a permutation in a list value".into()),
            Expr::List(_) => return Err("a list inside a list value".into()),
            Expr::Rule(_) => return Err("a rule inside a list value".into()),
        })
    }
    out.extend(go(e)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(json: &str) -> IntentsData {
        IntentsData::from_slice(json.as_bytes(), "test").unwrap()
    }

    #[test]
    fn errors_name_intent_block_and_sentence() {
        let d = data(r#"{"intents": {"X": {"data": [{"sentences": ["ok"]}, {"sentences": ["fine", "turn (on"]}]}}}"#);
        let e = compile(&d).unwrap_err().to_string();
        assert!(e.starts_with("test: intent X, data block 1, sentence 1: template \"turn (on\""), "{e}");

        let d = data(r#"{"intents": {"X": {"data": [{"sentences": ["<nope> on"]}]}}}"#);
        let e = compile(&d).unwrap_err().to_string();
        assert!(e.contains("sentence 0 \"<nope> on\": expansion rule <nope> is not defined"), "{e}");

        let d = data(
            r#"{"expansion_rules": {"a": "x <b>", "b": "<a>"}, "intents": {"X": {"data": [{"sentences": ["<a>"]}]}}}"#,
        );
        let e = compile(&d).unwrap_err().to_string();
        assert!(e.contains("refers to itself"), "{e}");

        let d = data(r#"{"expansion_rules": {"a": "(x"}, "intents": {}}"#);
        let e = compile(&d).unwrap_err().to_string();
        assert!(e.starts_with("expansion rule <a>: template \"(x\""), "{e}");

        let d = data(r#"{"lists": {"l": {"values": ["(a"]}}, "intents": {"X": {"data": [{"sentences": ["{l}"]}]}}}"#);
        let e = compile(&d).unwrap_err().to_string();
        assert!(e.contains("list {l}"), "{e}");
    }

    #[test]
    fn list_values_expand_and_ranges_check() {
        let d = data(
            r#"{"lists": {"mode": {"values": [{"in": "auto[matic]", "out": "auto"}, "Day[ ]light"]}},
                "intents": {"X": {"data": [{"sentences": ["{mode}"]}]}}}"#,
        );
        let p = compile(&d).unwrap();
        let ListKind::Values(v) = &p.lists[0].kind else { panic!() };
        let texts: Vec<&str> = v.iter().map(|v| v.text.as_str()).collect();
        assert_eq!(texts, ["automatic", "auto", "day light", "daylight"]);
        let r = RangeSpec {
            from: 0,
            to: 100,
            step: 5,
            fractions: vec![0.5],
            multiplier: Some(-1.0),
            digits: true,
            words: true,
        };
        assert_eq!(r.value(20.0), Some(Value::from(-20)));
        assert_eq!(r.value(21.0), None);
        assert_eq!(r.value(20.5), Some(Value::from(-20.5)));
        assert_eq!(r.value(100.5), None);
        assert_eq!(r.value(105.0), None);
    }

    #[test]
    fn prefilter_clauses() {
        let d = data(
            r#"{"expansion_rules": {"turn": "(turn|switch)"},
                "intents": {"X": {"data": [{"sentences": ["<turn> on [the] {name}", "[please] (lock|open [up])"]}]}}}"#,
        );
        let p = compile(&d).unwrap();
        let names = |s: &Sentence| -> Vec<Vec<String>> {
            s.clauses.iter().map(|c| c.iter().map(|&f| p.fragments[f as usize].clone()).collect()).collect()
        };
        assert_eq!(names(&p.sentences[0]), vec![vec!["turn".to_string(), "switch".into()], vec!["on".into()]]);
        assert_eq!(names(&p.sentences[1]), vec![vec!["lock".to_string(), "open".into()]]);
    }
}
