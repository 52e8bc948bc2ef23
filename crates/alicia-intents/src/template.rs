//! Home Assistant's sentence template syntax (hassil's), parsed into an expression tree.
//!
//! | syntax | meaning |
//! | --- | --- |
//! | `(a\|b)` | one of the alternatives |
//! | `[x]`, `[a\|b]` | optional: `(x\|)` |
//! | `(a;b)` | permutation: the items in any order |
//! | `{list}`, `{list:slot}` | a value of a list, put in slot `list` (or `slot`) |
//! | `{list:@name}`, `{@list}` | a capture: the matched text, for the response only, not a slot |
//! | `{0..100:slot}`, `{10..100,10:slot}` | an inline number range (step optional) |
//! | `<rule>` | an expansion rule, substituted in place |
//! | `\(` | a reserved character taken literally |
//!
//! Text is kept as written here (normalised later, see [`crate::normalize`]); whitespace is
//! significant: `light[s]` is one word with an optional ending, `light [s]` two.
//! Parsing is hand-written: no crate parses this syntax.

use std::fmt;

/// A parsed template expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Literal text, spaces included.
    Text(String),
    /// Items one after the other.
    Seq(Vec<Expr>),
    /// One of the items; `optional` adds the empty alternative.
    Alt { items: Vec<Expr>, optional: bool },
    /// All items, in any order.
    Perm(Vec<Expr>),
    /// A list reference.
    List(ListRef),
    /// An expansion rule reference.
    Rule(String),
}

/// `{list}`, `{list:slot}`, `{list:@capture}` or an inline range `{1..10,2:slot}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListRef {
    /// The list's name (for an inline range, the range text itself, e.g. `0..100`).
    pub list: String,
    /// The slot (or capture) the value goes to.
    pub slot: String,
    /// True for `@` captures: the text goes to the response, not to the slots.
    pub capture: bool,
    /// An inline range: (from, to, step).
    pub inline_range: Option<(i64, i64, i64)>,
}

/// A template that cannot be parsed: the template, where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {template:?}, column {column}: {message}")]
pub struct TemplateError {
    pub template: String,
    /// 1-based character column.
    pub column: usize,
    pub message: String,
}

/// Parses one sentence template (or an expansion rule's body, or a list value's `in`).
pub fn parse(template: &str) -> Result<Expr, TemplateError> {
    let chars: Vec<char> = template.chars().collect();
    let mut p = Parser { template, chars: &chars, pos: 0 };
    let expr = p.group_body(None)?;
    if p.pos < chars.len() {
        // group_body only stops early at a closing delimiter it was not waiting for.
        return Err(p.error(format!("unexpected {:?} without its opening bracket", chars[p.pos])));
    }
    Ok(simplify(expr))
}

struct Parser<'a> {
    template: &'a str,
    chars: &'a [char],
    pos: usize,
}

/// How items of a group are separated, once known.
#[derive(Clone, Copy, PartialEq)]
enum Sep {
    Alt,
    Perm,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> TemplateError {
        self.error_at(self.pos, message)
    }

    fn error_at(&self, pos: usize, message: impl Into<String>) -> TemplateError {
        TemplateError { template: self.template.to_string(), column: pos + 1, message: message.into() }
    }

    /// Parses items up to `close` (or the end when `close` is None), splitting on `|` and `;`.
    /// Leaves `pos` on the closing character.
    fn group_body(&mut self, close: Option<char>) -> Result<Expr, TemplateError> {
        let start = self.pos;
        let mut branches: Vec<Vec<Expr>> = vec![Vec::new()];
        let mut sep: Option<Sep> = None;
        let mut text = String::new();
        let flush = |text: &mut String, branch: &mut Vec<Expr>| {
            if !text.is_empty() {
                branch.push(Expr::Text(std::mem::take(text)));
            }
        };
        while self.pos < self.chars.len() {
            let c = self.chars[self.pos];
            match c {
                '\\' => {
                    let Some(&next) = self.chars.get(self.pos + 1) else {
                        return Err(self.error("a backslash at the end escapes nothing"));
                    };
                    text.push(next);
                    self.pos += 2;
                }
                '(' | '[' => {
                    flush(&mut text, branches.last_mut().expect("one branch"));
                    let open = self.pos;
                    self.pos += 1;
                    let closing = if c == '(' { ')' } else { ']' };
                    let inner = self.group_body(Some(closing))?;
                    if self.pos >= self.chars.len() {
                        return Err(self.error_at(open, format!("{c:?} is never closed (expected {closing:?})")));
                    }
                    self.pos += 1;
                    let expr = if c == '[' {
                        match inner {
                            Expr::Alt { items, .. } => Expr::Alt { items, optional: true },
                            Expr::Perm(_) => {
                                return Err(
                                    self.error_at(open, "a permutation (;) cannot be optional; wrap it: [(a;b)]")
                                )
                            }
                            other => Expr::Alt { items: vec![other], optional: true },
                        }
                    } else {
                        inner
                    };
                    branches.last_mut().expect("one branch").push(expr);
                }
                ')' | ']' => {
                    if Some(c) == close {
                        break;
                    }
                    return Err(self.error(format!("unexpected {c:?}")));
                }
                '|' | ';' => {
                    let this = if c == '|' { Sep::Alt } else { Sep::Perm };
                    // A top-level `;` makes the whole sentence a permutation, as in hassil,
                    // which wraps every sentence in a group.
                    if close == Some(']') && this == Sep::Perm {
                        return Err(self.error("`;` (permutation) inside [optional]; use [(a;b)]"));
                    }
                    if let Some(s) = sep {
                        if s != this {
                            return Err(self.error("`|` and `;` mixed in one group; nest one of them in ( )"));
                        }
                    }
                    sep = Some(this);
                    flush(&mut text, branches.last_mut().expect("one branch"));
                    branches.push(Vec::new());
                    self.pos += 1;
                }
                '{' => {
                    flush(&mut text, branches.last_mut().expect("one branch"));
                    let list = self.list_ref()?;
                    branches.last_mut().expect("one branch").push(Expr::List(list));
                }
                '<' => {
                    flush(&mut text, branches.last_mut().expect("one branch"));
                    let open = self.pos;
                    let end = self.find('>', open)?;
                    let name: String = self.chars[open + 1..end].iter().collect();
                    check_name(&name).map_err(|m| self.error_at(open, format!("rule <{name}>: {m}")))?;
                    branches.last_mut().expect("one branch").push(Expr::Rule(name));
                    self.pos = end + 1;
                }
                '}' | '>' => return Err(self.error(format!("unexpected {c:?}"))),
                _ => {
                    text.push(c);
                    self.pos += 1;
                }
            }
        }
        if close.is_some() && self.pos >= self.chars.len() {
            let open = start.saturating_sub(1);
            let closing = close.unwrap_or(')');
            return Err(self.error_at(open, format!("{:?} is never closed (expected {closing:?})", self.chars[open])));
        }
        flush(&mut text, branches.last_mut().expect("one branch"));
        let mut items: Vec<Expr> = branches.into_iter().map(seq).collect();
        Ok(match sep {
            None => items.pop().expect("one branch"),
            Some(Sep::Alt) => Expr::Alt { items, optional: false },
            Some(Sep::Perm) => {
                if items.len() > 6 {
                    return Err(self.error_at(start, "a permutation of more than 6 items (720 orders) is refused"));
                }
                Expr::Perm(items)
            }
        })
    }

    /// Index of `close` after `open`, or an error naming the unclosed opening.
    fn find(&self, close: char, open: usize) -> Result<usize, TemplateError> {
        let open_c = self.chars[open];
        for i in open + 1..self.chars.len() {
            let c = self.chars[i];
            if c == close {
                return Ok(i);
            }
            if "()[]{}<>|;".contains(c) {
                return Err(self.error_at(i, format!("{c:?} inside {open_c}...{close}")));
            }
        }
        Err(self.error_at(open, format!("{open_c:?} is never closed (expected {close:?})")))
    }

    fn list_ref(&mut self) -> Result<ListRef, TemplateError> {
        let open = self.pos;
        let end = self.find('}', open)?;
        let body: String = self.chars[open + 1..end].iter().collect();
        self.pos = end + 1;
        let err = |m: String| self.error_at(open, format!("list {{{body}}}: {m}"));
        let (list, slot) = match body.split_once(':') {
            Some((l, s)) => (l.trim().to_string(), Some(s.trim().to_string())),
            None => (body.trim().to_string(), None),
        };
        // {@list} = {list:@list}
        let (list, slot) = match (list.strip_prefix('@'), slot) {
            (Some(l), None) => (l.to_string(), Some(format!("@{l}"))),
            (Some(_), Some(_)) => return Err(err("`@` goes on the slot: {list:@name}".into())),
            (None, s) => (list, s),
        };
        let inline_range = if list.contains("..") { Some(parse_range(&list).map_err(err)?) } else { None };
        if inline_range.is_none() {
            check_name(&list).map_err(err)?;
        }
        let slot = match slot {
            Some(s) => s,
            None if inline_range.is_some() => return Err(err("an inline range needs a slot: {0..100:slot}".into())),
            None => list.clone(),
        };
        let (slot, capture) = match slot.strip_prefix('@') {
            Some(s) => (s.to_string(), true),
            None => (slot, false),
        };
        check_name(&slot).map_err(err)?;
        Ok(ListRef { list, slot, capture, inline_range })
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.chars().any(|c| c.is_whitespace()) {
        return Err("a name cannot contain spaces".into());
    }
    Ok(())
}

/// `0..100` or `10..100,10`.
fn parse_range(text: &str) -> Result<(i64, i64, i64), String> {
    let (range, step) = match text.split_once(',') {
        Some((r, s)) => (r, s.trim().parse::<i64>().map_err(|_| format!("step {s:?} is not an integer"))?),
        None => (text, 1),
    };
    let (from, to) = range.split_once("..").ok_or("expected FROM..TO")?;
    let from = from.trim().parse::<i64>().map_err(|_| format!("{from:?} is not an integer"))?;
    let to = to.trim().parse::<i64>().map_err(|_| format!("{to:?} is not an integer"))?;
    if from > to {
        return Err(format!("{from} is greater than {to}"));
    }
    if step <= 0 {
        return Err("the step must be positive".into());
    }
    Ok((from, to, step))
}

fn seq(mut items: Vec<Expr>) -> Expr {
    if items.len() == 1 {
        items.pop().expect("one item")
    } else {
        Expr::Seq(items)
    }
}

/// Flattens nested sequences and unwraps one-item groups.
fn simplify(e: Expr) -> Expr {
    match e {
        Expr::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                match simplify(i) {
                    Expr::Seq(inner) => out.extend(inner),
                    other => out.push(other),
                }
            }
            seq(out)
        }
        Expr::Alt { items, optional } => {
            let items: Vec<Expr> = items.into_iter().map(simplify).collect();
            if items.len() == 1 && !optional {
                items.into_iter().next().expect("one item")
            } else {
                Expr::Alt { items, optional }
            }
        }
        Expr::Perm(items) => Expr::Perm(items.into_iter().map(simplify).collect()),
        other => other,
    }
}

impl fmt::Display for Expr {
    /// Writes the expression back in template syntax (normalised: one form per meaning).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Text(t) => {
                for c in t.chars() {
                    if "()[]{}<>|;\\".contains(c) {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
                Ok(())
            }
            Expr::Seq(items) => items.iter().try_for_each(|i| write!(f, "{i}")),
            Expr::Alt { items, optional } => {
                f.write_str(if *optional { "[" } else { "(" })?;
                for (n, i) in items.iter().enumerate() {
                    if n > 0 {
                        f.write_str("|")?;
                    }
                    write!(f, "{i}")?;
                }
                f.write_str(if *optional { "]" } else { ")" })
            }
            Expr::Perm(items) => {
                f.write_str("(")?;
                for (n, i) in items.iter().enumerate() {
                    if n > 0 {
                        f.write_str(";")?;
                    }
                    write!(f, "{i}")?;
                }
                f.write_str(")")
            }
            Expr::List(l) => {
                let at = if l.capture { "@" } else { "" };
                write!(f, "{{{}:{at}{}}}", l.list, l.slot)
            }
            Expr::Rule(r) => write!(f, "<{r}>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Expr {
        Expr::Text(s.into())
    }
    fn list(name: &str, slot: &str) -> Expr {
        Expr::List(ListRef { list: name.into(), slot: slot.into(), capture: false, inline_range: None })
    }

    #[test]
    fn plain_text() {
        assert_eq!(parse("turn on the light").unwrap(), t("turn on the light"));
    }

    #[test]
    fn alternatives_and_optionals() {
        assert_eq!(
            parse("(turn|switch) on").unwrap(),
            Expr::Seq(vec![Expr::Alt { items: vec![t("turn"), t("switch")], optional: false }, t(" on")])
        );
        assert_eq!(
            parse("light[s]").unwrap(),
            Expr::Seq(vec![t("light"), Expr::Alt { items: vec![t("s")], optional: true }])
        );
        assert_eq!(parse("[a|an|the]").unwrap(), Expr::Alt { items: vec![t("a"), t("an"), t("the")], optional: true });
        // An empty alternative is allowed: `( |-)` and `(x|)`.
        assert_eq!(parse("(x|)").unwrap(), Expr::Alt { items: vec![t("x"), Expr::Seq(vec![])], optional: false });
    }

    #[test]
    fn nesting() {
        let e = parse("[[of] (the|my)]").unwrap();
        assert_eq!(e.to_string(), "[[of] (the|my)]");
        let e = parse("(all [[of] (the|my|our)]|every [single])").unwrap();
        assert_eq!(e.to_string(), "(all [[of] (the|my|our)]|every [single])");
    }

    #[test]
    fn permutations() {
        assert_eq!(parse("(on;<here>)").unwrap(), Expr::Perm(vec![t("on"), Expr::Rule("here".into())]));
        assert_eq!(parse("<turn> (on;[<here>])").unwrap().to_string(), "<turn> (on;[<here>])");
    }

    #[test]
    fn lists_slots_captures_and_ranges() {
        assert_eq!(parse("{area}").unwrap(), list("area", "area"));
        assert_eq!(parse("{volume_step_up:volume_step}").unwrap(), list("volume_step_up", "volume_step"));
        let Expr::List(c) = parse("{name:@who}").unwrap() else { panic!() };
        assert!(c.capture && c.slot == "who" && c.list == "name");
        let Expr::List(c) = parse("{@name}").unwrap() else { panic!() };
        assert!(c.capture && c.slot == "name");
        let Expr::List(r) = parse("{10..100,10:seconds}").unwrap() else { panic!() };
        assert_eq!(r.inline_range, Some((10, 100, 10)));
        assert_eq!(r.slot, "seconds");
    }

    #[test]
    fn rules_and_escapes() {
        assert_eq!(parse("<the>").unwrap(), Expr::Rule("the".into()));
        assert_eq!(parse(r"a \(b\)").unwrap(), t("a (b)"));
        assert_eq!(parse(r"a \(b\)").unwrap().to_string(), r"a \(b\)");
    }

    #[test]
    fn errors_name_the_template_and_column() {
        let cases = [
            ("turn on (the light", 9, "never closed"),
            ("turn on the light)", 18, "unexpected ')'"),
            ("turn on [the light", 9, "never closed"),
            ("{name", 1, "never closed"),
            ("{name:}", 1, "empty name"),
            ("<the", 1, "never closed"),
            ("<>", 1, "empty name"),
            ("(a|b;c)", 5, "mixed"),
            ("[a;b]", 3, "permutation"),
            ("{5..1:x}", 1, "greater"),
            ("{1..5}", 1, "needs a slot"),
            ("a\\", 2, "backslash"),
            ("a } b", 3, "unexpected '}'"),
        ];
        for (template, column, what) in cases {
            let err = parse(template).unwrap_err();
            assert_eq!(err.template, template);
            assert_eq!(err.column, column, "{template}: {err}");
            assert!(err.message.contains(what), "{template}: {err}");
            assert!(err.to_string().contains(&format!("{template:?}")), "{err}");
        }
    }
}
