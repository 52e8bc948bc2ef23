//! The matcher: a depth-first walk of the compiled graph over one normalised utterance,
//! collecting every complete parse (the caller ranks them).
//!
//! Text nodes compare bytes; a space in a template matches one space of the utterance, or
//! nothing where the utterance is already at a word boundary (so `turn ` + ` on` and
//! `light` + `[s]` both work). Lists are looked up once per (list, position) per utterance and
//! cached. A (node, position) from which no parse completed is remembered as dead, so shared
//! continuations are not walked again; with the step limit this bounds the work for any input.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::compile::{ListKind, Node, NodeId, Program};
use crate::home::{HomeIndex, NameHit};
use crate::numbers::{parse_digits, parse_words};

/// What a list reference captured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum CapValue {
    /// A static list's value (index into its values).
    Static(u32),
    Number(f64),
    Wildcard,
    /// A runtime list entry, with the edits it took (0 = exact).
    Name {
        entry: u32,
        edits: u32,
    },
    /// Near-miss pass only: text where a runtime list value was expected.
    Unknown,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Cap {
    pub list: u32,
    pub slot: u32,
    pub capture: bool,
    pub start: u32,
    pub end: u32,
    pub value: CapValue,
}

/// One complete parse of one sentence.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub sentence: u32,
    pub caps: Vec<Cap>,
    /// Literal template characters matched (more is a more specific parse).
    pub literal: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Names exactly as listed.
    Exact,
    /// Names also within a few edits.
    Fuzzy,
    /// Also any 1–4 words where a runtime name is expected (for "I don't know X").
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Hit {
    start: u32,
    end: u32,
    value: CapValue,
}

/// Work budget for one pass over one utterance: far above what real sentences need (a few
/// thousand), low enough that no input keeps a core busy for long.
const STEP_LIMIT: u32 = 400_000;

pub(crate) struct Pass<'a> {
    prog: &'a Program,
    home: &'a HomeIndex,
    text: &'a str,
    mode: Mode,
    hits: HashMap<(u32, u32), Rc<Vec<Hit>>>,
    dead: HashSet<(NodeId, u32)>,
    fragments: Vec<u8>,
    steps: u32,
    pub exhausted: bool,
    caps: Vec<Cap>,
    sentence: u32,
    pub out: Vec<Raw>,
}

impl<'a> Pass<'a> {
    pub fn new(prog: &'a Program, home: &'a HomeIndex, text: &'a str, mode: Mode) -> Pass<'a> {
        Pass {
            prog,
            home,
            text,
            mode,
            hits: HashMap::new(),
            dead: HashSet::new(),
            fragments: vec![0; prog.fragments.len()],
            steps: 0,
            exhausted: false,
            caps: Vec::new(),
            sentence: 0,
            out: Vec::new(),
        }
    }

    /// Matches the utterance against the sentences for which `want` is true.
    pub fn run(&mut self, want: impl Fn(u32) -> bool) {
        for (i, s) in self.prog.sentences.iter().enumerate() {
            if !want(i as u32) || !self.prefilter(&s.clauses) {
                continue;
            }
            self.sentence = i as u32;
            self.walk(s.start, 0, 0);
            if self.exhausted {
                break;
            }
        }
    }

    fn prefilter(&mut self, clauses: &[Vec<u32>]) -> bool {
        clauses.iter().all(|clause| {
            clause.iter().any(|&f| {
                let slot = &mut self.fragments[f as usize];
                if *slot == 0 {
                    *slot = if self.text.contains(self.prog.fragments[f as usize].as_str()) { 1 } else { 2 };
                }
                *slot == 1
            })
        })
    }

    fn walk(&mut self, mut node: NodeId, mut pos: usize, mut literal: u32) {
        self.steps += 1;
        if self.steps > STEP_LIMIT {
            self.exhausted = true;
            return;
        }
        let bytes = self.text.as_bytes();
        loop {
            match &self.prog.nodes[node as usize] {
                Node::End => {
                    if pos == bytes.len() {
                        self.out.push(Raw { sentence: self.sentence, caps: self.caps.clone(), literal });
                    }
                    return;
                }
                Node::Text { text, literal: l, next } => match match_text(bytes, pos, text.as_bytes()) {
                    Some(p) => {
                        pos = p;
                        literal += l;
                        node = *next;
                    }
                    None => return,
                },
                Node::Split { first, count } => {
                    if self.dead.contains(&(node, pos as u32)) {
                        return;
                    }
                    let before = self.out.len();
                    let (first, count) = (*first as usize, *count as usize);
                    for i in first..first + count {
                        let target = self.prog.edges[i];
                        self.walk(target, pos, literal);
                        if self.exhausted {
                            return;
                        }
                    }
                    if self.out.len() == before {
                        self.dead.insert((node, pos as u32));
                    }
                    return;
                }
                Node::List { list, slot, capture, next } => {
                    if self.dead.contains(&(node, pos as u32)) {
                        return;
                    }
                    let (list, slot, capture, next) = (*list, *slot, *capture, *next);
                    let before = self.out.len();
                    let hits = self.hits(list, pos);
                    for h in hits.iter() {
                        self.caps.push(Cap { list, slot, capture, start: h.start, end: h.end, value: h.value });
                        self.walk(next, h.end as usize, literal);
                        self.caps.pop();
                        if self.exhausted {
                            return;
                        }
                    }
                    if self.out.len() == before {
                        self.dead.insert((node, pos as u32));
                    }
                    return;
                }
            }
        }
    }

    fn hits(&mut self, list: u32, pos: usize) -> Rc<Vec<Hit>> {
        if let Some(h) = self.hits.get(&(list, pos as u32)) {
            return h.clone();
        }
        let h = Rc::new(self.find(list, pos));
        self.hits.insert((list, pos as u32), h.clone());
        h
    }

    fn find(&self, list: u32, pos: usize) -> Vec<Hit> {
        let bytes = self.text.as_bytes();
        let mut out = Vec::new();
        // A list starts at a word: step over the space a template left unconsumed.
        let start = if bytes.get(pos) == Some(&b' ') { pos + 1 } else { pos };
        if start >= bytes.len() {
            return out;
        }
        let at_word = start == 0 || bytes[start - 1] == b' ';
        let rest = &self.text[start..];
        let hit = |end: usize, value| Hit { start: start as u32, end: end as u32, value };
        match &self.prog.lists[list as usize].kind {
            ListKind::Values(values) => {
                for (i, v) in values.iter().enumerate() {
                    if rest.starts_with(v.text.as_str()) {
                        out.push(hit(start + v.text.len(), CapValue::Static(i as u32)));
                    }
                }
            }
            ListKind::Range(spec) => {
                if spec.digits {
                    if let Some((len, n)) = parse_digits(rest) {
                        if spec.value(n).is_some() {
                            out.push(hit(start + len, CapValue::Number(n)));
                        }
                    }
                }
                if spec.words && at_word {
                    let words: Vec<&str> = rest.split(' ').take(12).collect();
                    for (k, n) in parse_words(&words) {
                        if spec.value(n).is_some() {
                            let len: usize = words[..k].iter().map(|w| w.len()).sum::<usize>() + k - 1;
                            out.push(hit(start + len, CapValue::Number(n)));
                        }
                    }
                }
            }
            ListKind::Wildcard => {
                // Any non-empty run of whole words; the template decides where it ends.
                for (i, &b) in bytes.iter().enumerate().skip(start + 1) {
                    if b == b' ' {
                        out.push(hit(i, CapValue::Wildcard));
                    }
                }
                out.push(hit(bytes.len(), CapValue::Wildcard));
            }
            ListKind::Runtime(name) => {
                if !at_word {
                    return out;
                }
                let mut names: Vec<NameHit> = Vec::new();
                if let Some(l) = self.home.list(name) {
                    l.exact(self.text, start, &mut names);
                    if self.mode != Mode::Exact {
                        l.fuzzy(self.text, start, &mut names);
                    }
                }
                let known_ends: Vec<usize> = names.iter().map(|n| n.end).collect();
                out.extend(names.into_iter().map(|n| hit(n.end, CapValue::Name { entry: n.entry, edits: n.edits })));
                if self.mode == Mode::Unknown {
                    let mut end = start;
                    for _ in 0..4 {
                        end = match bytes[end..].iter().skip(1).position(|&b| b == b' ') {
                            Some(i) => end + 1 + i,
                            None => bytes.len(),
                        };
                        if !known_ends.contains(&end) {
                            out.push(hit(end, CapValue::Unknown));
                        }
                        if end == bytes.len() {
                            break;
                        }
                        end += 1;
                    }
                }
            }
        }
        out
    }
}

/// Matches template text at `pos`; returns the position after it.
#[inline]
pub(crate) fn match_text(input: &[u8], mut pos: usize, text: &[u8]) -> Option<usize> {
    for &c in text {
        if c == b' ' {
            if pos < input.len() && input[pos] == b' ' {
                pos += 1;
            } else if !(pos == 0 || pos == input.len() || input[pos - 1] == b' ') {
                return None;
            }
        } else if pos < input.len() && input[pos] == c {
            pos += 1;
        } else {
            return None;
        }
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_are_boundaries() {
        let m = |i: &str, p: usize, t: &str| match_text(i.as_bytes(), p, t.as_bytes());
        assert_eq!(m("turn on", 0, "turn "), Some(5));
        assert_eq!(m("turn on", 5, " on"), Some(7));
        assert_eq!(m("lights on", 0, "light"), Some(5));
        assert_eq!(m("lights on", 5, "s"), Some(6));
        assert_eq!(m("lights on", 5, " on"), None);
        assert_eq!(m("turn one", 5, "on "), None);
        assert_eq!(m("turn on", 7, " "), Some(7));
        assert_eq!(m("turnon", 0, "turn on"), None);
    }
}
