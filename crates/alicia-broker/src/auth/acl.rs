//! Mosquitto `acl_file`s: who may read, write and subscribe to which topics.
//!
//! ```text
//! # Before any `user` line: rules for clients without a user name.
//! topic read alicia/status
//!
//! user stt_service
//! topic readwrite alicia/services/stt/#
//! topic deny alicia/services/stt/secret
//!
//! # Patterns apply to every client, wherever they appear in the file.
//! pattern readwrite alicia/devices/%c/#
//! pattern read alicia/users/%u/#
//! ```
//!
//! `topic [read|write|readwrite|deny] FILTER` (default `readwrite`) belongs to the section of the
//! last `user NAME` line, or to the anonymous section before the first one. `pattern` lines
//! substitute `%c` (client id) and `%u` (user name) and apply to everyone.
//!
//! Decisions, as in Mosquitto 2.0, with the differences called out:
//! - a matching `deny` refuses access. Mosquitto checks a user's own rules before patterns, so a
//!   user `topic` grant beats a `pattern deny`; here any matching `deny` wins, which is what
//!   users expect when they write one;
//! - otherwise access is granted when a matching rule grants it, and refused when none does;
//! - a client with a user name gets its `user` section and the patterns; the anonymous section
//!   is only for clients without a user name;
//! - a client id or user name that is empty, contains `+`, `#` or `/`, is never substituted into
//!   a pattern: it could otherwise widen the pattern (`%c` = `#`) or reach into another client's
//!   subtree (`%c` = `other/x`). Such a pattern grants nothing and, if it is a `deny`, denies
//!   everything (Mosquitto denies all pattern access to `+`/`#` names, and does not guard `/`);
//! - topics starting with `$` are only matched by rules whose text starts with `$`, so neither
//!   `#` nor a pattern like `%c/#` with client id `$SYS` can reach `$SYS`.
//!
//! Mosquitto 2.0 does not check subscriptions against the ACL at all; it only filters what is
//! delivered. [`Access::Subscribe`] is stricter: a subscription is allowed when one readable rule
//! covers every topic the filter can match (`a/#` needs `read a/#` or wider; `read a/b` alone
//! does not do) and no `deny` rule covers the whole filter. A deny that covers only part of it
//! (`deny a/secret` under `a/#`) is enforced by the [`Access::Read`] check on each delivery,
//! which therefore must still be made.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use alicia_codec::topic;

use super::{first_word, read_text, Error};
pub use crate::security::Access;

/// What a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Perm {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Perm {
    fn parse(s: &str) -> Option<Perm> {
        Some(match s {
            "read" => Perm::Read,
            "write" => Perm::Write,
            "readwrite" => Perm::ReadWrite,
            "deny" => Perm::Deny,
            _ => return None,
        })
    }

    fn grants(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Perm::Read | Perm::ReadWrite, Access::Read | Access::Subscribe)
                | (Perm::Write | Perm::ReadWrite, Access::Write)
        )
    }
}

/// A piece of a pattern level.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    ClientId,
    Username,
}

/// One level of a rule's filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Plus,
    Hash,
    /// A literal level; for patterns it may contain `%c`/`%u`.
    Parts(Vec<Part>),
}

/// One `topic` or `pattern` line.
#[derive(Debug, Clone)]
struct Rule {
    /// The filter as written, for the `$` rule and debugging.
    text: String,
    levels: Vec<Level>,
    perm: Perm,
    uses_client: bool,
    uses_user: bool,
}

/// Who is asking.
#[derive(Clone, Copy)]
struct Who<'a> {
    client_id: &'a str,
    username: Option<&'a str>,
}

/// Whether a rule applies to a client.
enum Applies {
    /// Substitution went fine (or there was none): match the filter.
    Yes,
    /// The rule needs a user name and the client has none: the rule is not for this client.
    No,
    /// A value that would be substituted is unsafe.
    Unsafe,
}

fn safe_value(v: &str) -> bool {
    !v.is_empty() && !v.contains(['+', '#', '/'])
}

impl Rule {
    fn new(filter: &str, perm: Perm, pattern: bool) -> Rule {
        let levels = filter
            .split('/')
            .map(|level| match level {
                "+" => Level::Plus,
                "#" => Level::Hash,
                lit if pattern => Level::Parts(split_parts(lit)),
                lit => Level::Parts(vec![Part::Lit(lit.to_string())]),
            })
            .collect::<Vec<_>>();
        let has = |p: &Part| levels.iter().any(|l| matches!(l, Level::Parts(ps) if ps.contains(p)));
        let (uses_client, uses_user) = (has(&Part::ClientId), has(&Part::Username));
        Rule { text: filter.to_string(), levels, perm, uses_client, uses_user }
    }

    fn applies(&self, who: Who<'_>) -> Applies {
        if self.uses_user {
            match who.username {
                None => return Applies::No,
                Some(u) if !safe_value(u) => return Applies::Unsafe,
                Some(_) => {}
            }
        }
        if self.uses_client && !safe_value(who.client_id) {
            return Applies::Unsafe;
        }
        Applies::Yes
    }

    /// Whether a literal level (with substitutions) equals `s`.
    fn level_eq(parts: &[Part], mut s: &str, who: Who<'_>) -> bool {
        for part in parts {
            let piece = match part {
                Part::Lit(l) => l.as_str(),
                Part::ClientId => who.client_id,
                Part::Username => who.username.unwrap_or_default(),
            };
            match s.strip_prefix(piece) {
                Some(rest) => s = rest,
                None => return false,
            }
        }
        s.is_empty()
    }

    /// Whether this rule's filter matches topic name `topic`.
    fn matches_topic(&self, topic: &str, who: Who<'_>) -> bool {
        if topic.starts_with('$') && !self.text.starts_with('$') {
            return false;
        }
        let mut t = topic.split('/');
        for level in &self.levels {
            match (level, t.next()) {
                (Level::Hash, _) => return true,
                (Level::Plus, Some(_)) => {}
                (Level::Parts(p), Some(s)) if Rule::level_eq(p, s, who) => {}
                _ => return false,
            }
        }
        t.next().is_none()
    }

    /// Whether every topic that filter `sub` matches is matched by this rule.
    fn covers_filter(&self, sub: &str, who: Who<'_>) -> bool {
        if sub.starts_with('$') && !self.text.starts_with('$') {
            return false;
        }
        let mut s = sub.split('/');
        for level in &self.levels {
            match (level, s.next()) {
                (Level::Hash, _) => return true,
                (Level::Plus, Some(x)) if x != "#" => {}
                (Level::Parts(p), Some(x)) if x != "+" && x != "#" && Rule::level_eq(p, x, who) => {}
                _ => return false,
            }
        }
        s.next().is_none()
    }

    fn matches(&self, target: &str, access: Access, who: Who<'_>) -> bool {
        match access {
            Access::Subscribe => self.covers_filter(target, who),
            Access::Read | Access::Write => self.matches_topic(target, who),
        }
    }
}

/// Splits a pattern level into literal text, `%c` and `%u`. Any other `%` is literal.
fn split_parts(level: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut chars = level.chars().peekable();
    while let Some(c) = chars.next() {
        let sub = match (c, chars.peek()) {
            ('%', Some('c')) => Part::ClientId,
            ('%', Some('u')) => Part::Username,
            _ => {
                lit.push(c);
                continue;
            }
        };
        chars.next();
        if !lit.is_empty() {
            parts.push(Part::Lit(std::mem::take(&mut lit)));
        }
        parts.push(sub);
    }
    if !lit.is_empty() || parts.is_empty() {
        parts.push(Part::Lit(lit));
    }
    parts
}

/// Rules of one section, denials apart so they are checked first.
#[derive(Debug, Clone, Default)]
struct Rules {
    deny: Vec<Rule>,
    grant: Vec<Rule>,
}

impl Rules {
    fn push(&mut self, rule: Rule) {
        if rule.perm == Perm::Deny {
            self.deny.push(rule);
        } else {
            self.grant.push(rule);
        }
    }
}

/// A parsed Mosquitto ACL file. Immutable; reloading builds a new one.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    origin: PathBuf,
    anonymous: Rules,
    users: HashMap<String, Rules>,
    patterns: Rules,
}

impl Acl {
    /// Reads an ACL file. Errors name the file and line.
    pub fn load(path: impl AsRef<Path>) -> Result<Acl, Error> {
        let path = path.as_ref();
        Acl::parse(&read_text(path)?, path)
    }

    /// Parses ACL text; `origin` names the source in errors.
    ///
    /// Blank lines and lines starting with `#` (after optional white space) are skipped.
    /// Anything else must be `user NAME`, `topic [ACCESS] FILTER` or `pattern [ACCESS] FILTER`,
    /// where the filter is the rest of the line (it may contain spaces when ACCESS is given) and
    /// must be a valid MQTT topic filter. A `user` section may appear several times; its rules
    /// add up.
    pub fn parse(text: &str, origin: impl AsRef<Path>) -> Result<Acl, Error> {
        let origin = origin.as_ref();
        let mut acl = Acl { origin: origin.to_path_buf(), ..Acl::default() };
        let mut user: Option<String> = None;
        for (n, raw) in text.lines().enumerate() {
            let lineno = n + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = first_word(line);
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(Error::line(origin, lineno, "missing user name"));
                    }
                    user = Some(rest.to_string());
                }
                "topic" | "pattern" => {
                    let (first, remainder) = first_word(rest);
                    let (perm, filter) = if remainder.is_empty() {
                        (Perm::ReadWrite, first)
                    } else {
                        let perm = Perm::parse(first).ok_or_else(|| {
                            Error::line(
                                origin,
                                lineno,
                                format!("invalid access {first:?} (expected read, write, readwrite or deny)"),
                            )
                        })?;
                        (perm, remainder)
                    };
                    if filter.is_empty() {
                        return Err(Error::line(origin, lineno, format!("missing topic filter after {keyword}")));
                    }
                    if let Err(why) = topic::valid_filter(filter) {
                        return Err(Error::line(origin, lineno, format!("invalid topic filter {filter:?}: {why}")));
                    }
                    let pattern = keyword == "pattern";
                    let rule = Rule::new(filter, perm, pattern);
                    let section = match (&user, pattern) {
                        (_, true) => &mut acl.patterns,
                        (Some(u), false) => acl.users.entry(u.clone()).or_default(),
                        (None, false) => &mut acl.anonymous,
                    };
                    section.push(rule);
                }
                other => {
                    return Err(Error::line(
                        origin,
                        lineno,
                        format!("unknown keyword {other:?} (expected user, topic or pattern)"),
                    ))
                }
            }
        }
        Ok(acl)
    }

    /// The file this ACL was read from (as given to [`Acl::load`] or [`Acl::parse`]).
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Whether the client may perform `access` on `topic`: a topic name for [`Access::Read`] and
    /// [`Access::Write`], a subscription filter (possibly `$share/GROUP/FILTER`, checked on
    /// FILTER) for [`Access::Subscribe`]. Invalid names or filters are refused.
    pub fn check(&self, client_id: &str, username: Option<&str>, topic: &str, access: Access) -> bool {
        let target = match access {
            Access::Subscribe => match topic::parse_filter(topic) {
                Ok(f) => f.filter,
                Err(_) => return false,
            },
            Access::Read | Access::Write => {
                if topic::valid_name(topic).is_err() {
                    return false;
                }
                topic
            }
        };
        let who = Who { client_id, username };
        let section = match username {
            None => Some(&self.anonymous),
            Some(u) => self.users.get(u),
        };
        let sections = || section.into_iter().chain(std::iter::once(&self.patterns));
        for rule in sections().flat_map(|s| &s.deny) {
            match rule.applies(who) {
                Applies::No => {}
                Applies::Unsafe => return false,
                Applies::Yes => {
                    if rule.matches(target, access, who) {
                        return false;
                    }
                }
            }
        }
        sections().flat_map(|s| &s.grant).any(|rule| {
            matches!(rule.applies(who), Applies::Yes) && rule.perm.grants(access) && rule.matches(target, access, who)
        })
    }

    /// Whether the file has no rules at all (then every check is refused).
    pub fn is_empty(&self) -> bool {
        let empty = |r: &Rules| r.deny.is_empty() && r.grant.is_empty();
        empty(&self.anonymous) && empty(&self.patterns) && self.users.values().all(empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Access::{Read, Subscribe, Write};

    fn acl(text: &str) -> Acl {
        Acl::parse(text, "test.acl").unwrap()
    }

    const SAMPLE: &str = "
# anonymous
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret
topic write   logs/alice
topic space/x
topic readwrite shared space/x

pattern readwrite devices/%c/#
pattern read users/%u/inbox
pattern deny devices/%c/locked
pattern write x/%c-%u/y
";

    #[test]
    fn sections_and_defaults() {
        let a = acl(SAMPLE);
        // Anonymous section: only for clients without a user name.
        assert!(a.check("c1", None, "public/news", Read));
        assert!(!a.check("c1", None, "public/news", Write));
        assert!(!a.check("c1", Some("alice"), "public/news", Read));
        assert!(!a.check("c1", Some("bob"), "public/news", Read));
        // User section.
        assert!(a.check("c1", Some("alice"), "alice/x/y", Write));
        assert!(a.check("c1", Some("alice"), "alice", Read), "a/# matches its parent");
        assert!(!a.check("c1", Some("alice"), "alice/secret", Read), "deny wins");
        assert!(a.check("c1", Some("alice"), "alice/secret/sub", Read), "deny is a filter, not a prefix");
        assert!(a.check("c1", Some("alice"), "logs/alice", Write));
        assert!(!a.check("c1", Some("alice"), "logs/alice", Read));
        assert!(a.check("c1", Some("alice"), "space/x", Read) && a.check("c1", Some("alice"), "space/x", Write));
        assert!(a.check("c1", Some("alice"), "shared space/x", Write), "access given: filter may have spaces");
        assert!(!a.check("c1", Some("bob"), "alice/x", Read));
        assert!(!a.check("c1", Some("ALICE"), "alice/x", Read));
    }

    #[test]
    fn topic_without_access_takes_the_rest_as_filter() {
        // Mosquitto reads the second word as the access type when more follows.
        let err = Acl::parse("topic a/b c\n", "f").unwrap_err();
        assert!(err.to_string().starts_with("f:1: invalid access \"a/b\""), "{err}");
    }

    #[test]
    fn patterns() {
        let a = acl(SAMPLE);
        assert!(a.check("lamp", None, "devices/lamp/state", Write));
        assert!(a.check("lamp", Some("alice"), "devices/lamp/state", Read));
        assert!(!a.check("lamp", None, "devices/other/state", Read));
        assert!(!a.check("lamp", None, "devices/lamp/locked", Write), "pattern deny");
        assert!(a.check("c", Some("bob"), "users/bob/inbox", Read));
        assert!(!a.check("c", Some("bob"), "users/bob/inbox", Write));
        assert!(!a.check("c", Some("bob"), "users/alice/inbox", Read));
        assert!(!a.check("c", None, "users//inbox", Read), "%u rules skip anonymous clients");
        assert!(a.check("c", Some("bob"), "x/c-bob/y", Write), "substitution inside a level");
        assert!(!a.check("c", Some("bob"), "x/c-bo/y", Write));
        assert!(!a.check("c", Some("bob"), "x/c-bobb/y", Write));
        // Pattern deny beats a user grant (Mosquitto would let the user rule win).
        let a = acl("user u\ntopic readwrite devices/#\npattern deny devices/%c/locked\n");
        assert!(a.check("d1", Some("u"), "devices/d2/locked", Write));
        assert!(!a.check("d1", Some("u"), "devices/d1/locked", Write));
    }

    #[test]
    fn dangerous_names_cannot_widen_patterns() {
        let a = acl("pattern readwrite devices/%c/#\npattern read users/%u/#\ntopic read public\n");
        for bad in ["#", "+", "a/b", "a+", "", "x#"] {
            assert!(!a.check(bad, None, "devices/a/b", Read), "client id {bad:?}");
            assert!(!a.check(bad, None, "devices/x/y", Write), "client id {bad:?}");
            assert!(!a.check(bad, None, "devices/#", Subscribe), "client id {bad:?}");
            assert!(!a.check("c", Some(bad), "users/a/b", Read), "username {bad:?}");
        }
        // Rules that do not substitute the bad value still apply.
        assert!(a.check("a/b", None, "public", Read));
        // A deny pattern that cannot be substituted fails closed.
        let a = acl("topic readwrite devices/#\npattern deny devices/%c/locked\n");
        assert!(a.check("ok", None, "devices/x", Write));
        assert!(!a.check("a/b", None, "devices/x", Write));
        // `%u` deny rules do not apply to anonymous clients, as in Mosquitto.
        let a = acl("topic readwrite users/#\npattern deny users/%u/locked\n");
        assert!(a.check("c", None, "users/x/locked", Write));
    }

    #[test]
    fn dollar_topics() {
        let a = acl("topic read #\ntopic read +/broker\npattern read %c/#\ntopic read $SYS/broker/uptime\n");
        assert!(a.check("c", None, "a/b", Read));
        assert!(!a.check("c", None, "$SYS/broker/load", Read));
        assert!(!a.check("c", None, "$SYS/broker", Read));
        assert!(!a.check("$SYS", None, "$SYS/broker/load", Read), "pattern cannot reach $SYS via the client id");
        assert!(a.check("c", None, "$SYS/broker/uptime", Read));
        assert!(!a.check("c", None, "$SYS/#", Subscribe));
        assert!(a.check("c", None, "#", Subscribe));
        assert!(a.check("c", None, "$SYS/broker/uptime", Subscribe));
    }

    #[test]
    fn subscribe_is_filter_inclusion() {
        let a = acl("topic read a/#\ntopic read b/+/c\ntopic read d/e\ntopic write w/#\ntopic deny a/secret/#\n");
        for ok in ["a/#", "a", "a/+", "a/x/#", "a/+/y", "b/+/c", "b/x/c", "d/e", "$share/g/a/#"] {
            assert!(a.check("c", None, ok, Subscribe), "{ok}");
        }
        for bad in ["#", "+/#", "b/#", "b/+/#", "b/x/+", "d/#", "d/+", "d", "w/#", "a/secret/#", "a/secret/x", "a/#/x"]
        {
            assert!(!a.check("c", None, bad, Subscribe), "{bad}");
        }
        // A deny covering only part of the subscription leaves it to the per-message read check.
        assert!(a.check("c", None, "a/+/x", Subscribe));
        assert!(!a.check("c", None, "a/secret/x", Read));
        // Grants split over several rules do not add up.
        let a = acl("topic read a/b\ntopic read a/c\n");
        assert!(!a.check("c", None, "a/+", Subscribe));
        assert!(!a.check("c", None, "a/#", Subscribe));
        assert!(a.check("c", None, "a/b", Subscribe));
        let a = acl("topic read a/+/#\n");
        assert!(!a.check("c", None, "a/#", Subscribe), "a/# includes a itself");
        assert!(a.check("c", None, "a/x/#", Subscribe));
        assert!(a.check("c", None, "a/+", Subscribe));
    }

    #[test]
    fn invalid_requests_are_refused() {
        let a = acl("topic readwrite #\n");
        assert!(!a.check("c", None, "a/+", Read));
        assert!(!a.check("c", None, "a/#", Write));
        assert!(!a.check("c", None, "", Write));
        assert!(!a.check("c", None, "a/#/b", Subscribe));
        assert!(!a.check("c", None, "$share/g", Subscribe));
        assert!(a.check("c", None, "a/b", Write));
    }

    #[test]
    fn empty_acl_denies_everything() {
        let a = acl("# nothing\n\n");
        assert!(a.is_empty());
        assert!(!a.check("c", None, "a", Read));
        assert!(!a.check("c", Some("u"), "a", Write));
        assert!(!acl("user u\ntopic a\n").is_empty());
    }

    #[test]
    fn parse_errors_name_file_and_line() {
        let cases = [
            ("user", "missing user name"),
            ("topic", "missing topic filter"),
            ("pattern", "missing topic filter"),
            ("topic reed a/b", "invalid access \"reed\""),
            ("topic read a/#/b", "invalid topic filter \"a/#/b\""),
            ("topic read a+", "invalid topic filter"),
            ("users alice", "unknown keyword \"users\""),
        ];
        for (line, want) in cases {
            let err = Acl::parse(&format!("# c\n\n{line}\n"), "/etc/acl").unwrap_err().to_string();
            assert!(err.starts_with("/etc/acl:3: ") && err.contains(want), "{line}: {err}");
        }
        let err = Acl::load("/nonexistent/acl").unwrap_err().to_string();
        assert!(err.starts_with("/nonexistent/acl: "), "{err}");
    }

    #[test]
    fn deny_keyword_alone_is_a_topic() {
        // `topic deny` with nothing after: Mosquitto reads "deny" as the filter; we do too.
        let a = acl("topic  deny\n");
        assert!(a.check("c", None, "deny", Write));
    }

    #[test]
    fn split_parts_handles_percent() {
        assert_eq!(split_parts("a%cb"), vec![Part::Lit("a".into()), Part::ClientId, Part::Lit("b".into())]);
        assert_eq!(split_parts("%u%c"), vec![Part::Username, Part::ClientId]);
        assert_eq!(split_parts("100%"), vec![Part::Lit("100%".into())]);
        assert_eq!(split_parts("%x"), vec![Part::Lit("%x".into())]);
        assert_eq!(split_parts(""), vec![Part::Lit(String::new())]);
        // In `topic` lines %c is literal.
        let a = acl("topic read a/%c\n");
        assert!(a.check("c", None, "a/%c", Read) && !a.check("c", None, "a/c", Read));
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut seed = 0x9e37_79b9_u32;
        let alphabet =
            ["topic", "pattern", "user", "read", "deny", " ", "\n", "/", "+", "#", "%c", "%u", "$", "a", "é"];
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as usize
        };
        for _ in 0..3000 {
            let text: String = (0..next() % 30).map(|_| alphabet[next() % alphabet.len()]).collect();
            let topic: String = (0..next() % 8).map(|_| alphabet[5 + next() % 10]).collect();
            if let Ok(a) = Acl::parse(&text, "fuzz") {
                for access in [Read, Write, Subscribe] {
                    a.check("c", Some("u"), &topic, access);
                    a.check(&topic, None, &topic, access);
                }
            }
        }
    }
}
