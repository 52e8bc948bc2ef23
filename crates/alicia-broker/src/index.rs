//! The subscription index: a topic-level trie that publishers read without locking.
//!
//! Readers load an immutable snapshot through `ArcSwap` (a few atomic operations, no lock).
//! Writers (SUBSCRIBE, UNSUBSCRIBE, session end) serialise on a mutex, copy only the nodes on the
//! path from the root to the changed node, and publish the new root. Subscriptions change far
//! less often than messages flow, so this trades cheap reads for slightly dearer writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use alicia_codec::SubscriptionOptions;
use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::outbox::SessionHandle;

/// One client's subscription to one filter.
#[derive(Debug, Clone)]
pub(crate) struct Sub {
    /// The subscribing session.
    pub session: Arc<SessionHandle>,
    /// Its options.
    pub options: SubscriptionOptions,
    /// Its subscription identifier (v5).
    pub id: Option<u32>,
}

/// A shared subscription group (`$share/GROUP/FILTER`): each message goes to one member.
#[derive(Debug, Default)]
pub(crate) struct Group {
    /// Members in subscription order.
    pub members: Vec<Sub>,
    /// Round-robin cursor.
    pub next: AtomicUsize,
}

impl Group {
    /// Picks the next member, preferring members that are online.
    pub(crate) fn pick(&self) -> Option<&Sub> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.members[(start + i) % n])
            .find(|s| s.session.is_online())
            .or_else(|| self.members.get(start % n))
    }
}

#[derive(Debug, Default, Clone)]
struct Node {
    children: HashMap<Box<str>, Arc<Node>, foldhash::fast::RandomState>,
    subs: Vec<Sub>,
    groups: Vec<(Box<str>, Arc<Group>)>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subs.is_empty() && self.groups.is_empty()
    }
}

/// What a publish matched, borrowed from a snapshot.
pub(crate) struct Matches<'a> {
    /// Plain subscriptions (may contain several entries for one session).
    pub subs: Vec<&'a Sub>,
    /// Shared groups; the caller picks one member from each.
    pub groups: Vec<&'a Group>,
}

/// Snapshot of the index at one moment.
pub(crate) struct Snapshot(arc_swap::Guard<Arc<Node>>);

impl Snapshot {
    /// Collects every subscription whose filter matches `topic`.
    ///
    /// A loop with an explicit stack, not recursion: a topic's depth is the client's choice,
    /// and the stack must not be (issue 11: a 30,000-level filter crashed the broker).
    pub(crate) fn matches<'a>(&'a self, topic: &str, out: &mut Matches<'a>) {
        let dollar = topic.starts_with('$');
        let mut short: [&str; 16] = [""; 16];
        let mut n = 0;
        let mut long: Vec<&str> = Vec::new();
        for level in topic.split('/') {
            if n < short.len() {
                short[n] = level;
            } else {
                if long.is_empty() {
                    long.extend_from_slice(&short);
                }
                long.push(level);
            }
            n += 1;
        }
        let levels: &[&str] = if long.is_empty() { &short[..n] } else { &long };
        walk(&self.0, levels, dollar, out);
    }
}

fn collect<'a>(node: &'a Node, out: &mut Matches<'a>) {
    out.subs.extend(node.subs.iter());
    out.groups.extend(node.groups.iter().map(|(_, g)| &**g));
}

fn walk<'a>(root: &'a Node, levels: &[&str], dollar: bool, out: &mut Matches<'a>) {
    // Branches wait here only where a "+" child and a literal child both match; a Vec that is
    // never pushed to never allocates.
    let mut pending: Vec<(&'a Node, usize)> = Vec::new();
    let mut cur = Some((root, 0usize));
    while let Some((node, i)) = cur.take().or_else(|| pending.pop()) {
        let Some(level) = levels.get(i) else {
            collect(node, out);
            // "a/#" also matches "a".
            if let Some(h) = node.children.get("#") {
                collect(h, out);
            }
            continue;
        };
        // MQTT-4.7.2-1: a wildcard as the first level does not match a "$" topic.
        if !(i == 0 && dollar) {
            if let Some(h) = node.children.get("#") {
                collect(h, out);
            }
            if let Some(p) = node.children.get("+") {
                pending.push((p, i + 1));
            }
        }
        if let Some(c) = node.children.get(*level) {
            cur = Some((c, i + 1));
        }
    }
}

/// The index itself.
#[derive(Default)]
pub(crate) struct Index {
    root: ArcSwap<Node>,
    writer: Mutex<()>,
    count: AtomicUsize,
}

impl Index {
    /// The current snapshot, for matching.
    ///
    /// `ArcSwap::load` borrows a per-thread debt slot instead of bumping the shared reference
    /// count, so concurrent publishers do not contend on one cache line.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot(self.root.load())
    }

    /// Number of subscriptions (shared members included).
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Adds or replaces the subscription of `sub.session` to `filter` (in `group` if shared).
    /// Returns true if it already existed.
    pub(crate) fn subscribe(&self, group: Option<&str>, filter: &str, sub: Sub) -> bool {
        let _w = self.writer.lock();
        let mut existed = false;
        let root = update(&self.root.load(), &levels(filter), &mut |node| {
            let id = sub.session.id;
            match group {
                None => {
                    if let Some(s) = node.subs.iter_mut().find(|s| s.session.id == id) {
                        *s = sub.clone();
                        existed = true;
                    } else {
                        node.subs.push(sub.clone());
                    }
                }
                Some(g) => {
                    let mut members = match node.groups.iter().position(|(n, _)| &**n == g) {
                        Some(i) => node.groups.remove(i).1.members.clone(),
                        None => Vec::new(),
                    };
                    if let Some(s) = members.iter_mut().find(|s| s.session.id == id) {
                        *s = sub.clone();
                        existed = true;
                    } else {
                        members.push(sub.clone());
                    }
                    node.groups.push((g.into(), Arc::new(Group { members, next: AtomicUsize::new(0) })));
                }
            }
        });
        self.root.store(root);
        if !existed {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        existed
    }

    /// Removes the subscription of session `session_id` to `filter`. Returns true if it existed.
    pub(crate) fn unsubscribe(&self, group: Option<&str>, filter: &str, session_id: u64) -> bool {
        let _w = self.writer.lock();
        let mut existed = false;
        let root = update(&self.root.load(), &levels(filter), &mut |node| match group {
            None => {
                let before = node.subs.len();
                node.subs.retain(|s| s.session.id != session_id);
                existed = node.subs.len() != before;
            }
            Some(g) => {
                if let Some(i) = node.groups.iter().position(|(n, _)| &**n == g) {
                    let (name, old) = node.groups.remove(i);
                    let members: Vec<Sub> =
                        old.members.iter().filter(|s| s.session.id != session_id).cloned().collect();
                    existed = members.len() != old.members.len();
                    if !members.is_empty() {
                        node.groups.push((name, Arc::new(Group { members, next: AtomicUsize::new(0) })));
                    }
                }
            }
        });
        if existed {
            self.root.store(root);
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        existed
    }
}

fn levels(filter: &str) -> Vec<&str> {
    filter.split('/').collect()
}

/// Copies the path to `levels`, applies `f` to the last node, prunes nodes left empty. A loop
/// down and a loop up, not recursion: the depth is the client's.
fn update(root: &Node, levels: &[&str], f: &mut dyn FnMut(&mut Node)) -> Arc<Node> {
    let mut path: Vec<Node> = Vec::with_capacity(levels.len() + 1);
    path.push(root.clone());
    let mut cur = Some(root);
    for level in levels {
        let child = cur.and_then(|n| n.children.get(*level)).map(|c| &**c);
        path.push(child.cloned().unwrap_or_default());
        cur = child;
    }
    let mut child = path.pop().unwrap_or_default();
    f(&mut child);
    for level in levels.iter().rev() {
        let mut parent = path.pop().unwrap_or_default();
        if child.is_empty() {
            parent.children.remove(*level);
        } else {
            parent.children.insert((*level).into(), Arc::new(child));
        }
        child = parent;
    }
    Arc::new(child)
}

impl Drop for Node {
    /// Drops a chain of nodes in a loop: the default drop would recurse once per level.
    fn drop(&mut self) {
        let mut stack: Vec<Arc<Node>> = self.children.drain().map(|(_, c)| c).collect();
        while let Some(node) = stack.pop() {
            if let Ok(mut node) = Arc::try_unwrap(node) {
                stack.extend(node.children.drain().map(|(_, c)| c));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;

    fn sub(id: u64) -> Sub {
        Sub {
            session: SessionHandle::new(id, "c".into(), (10, 10), Arc::new(Stats::default())),
            options: SubscriptionOptions::default(),
            id: None,
        }
    }

    fn matched(index: &Index, topic: &str) -> Vec<u64> {
        let snap = index.snapshot();
        let mut m = Matches { subs: Vec::new(), groups: Vec::new() };
        snap.matches(topic, &mut m);
        let mut ids: Vec<u64> = m.subs.iter().map(|s| s.session.id).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn wildcards_and_dollar_topics() {
        let index = Index::default();
        index.subscribe(None, "a/+/c", sub(1));
        index.subscribe(None, "a/#", sub(2));
        index.subscribe(None, "#", sub(3));
        index.subscribe(None, "+/b/+", sub(4));
        index.subscribe(None, "$SYS/#", sub(5));
        assert_eq!(matched(&index, "a/b/c"), [1, 2, 3, 4]);
        assert_eq!(matched(&index, "a"), [2, 3]);
        assert_eq!(matched(&index, "$SYS/x"), [5]);
        assert!(index.unsubscribe(None, "a/#", 2));
        assert!(!index.unsubscribe(None, "a/#", 2));
        assert_eq!(matched(&index, "a/b/c"), [1, 3, 4]);
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn depth_costs_no_stack() {
        // Far deeper than any stack would allow with one frame per level (tests run on 2 MiB).
        let deep = vec!["x"; 200_000].join("/");
        let index = Index::default();
        index.subscribe(None, &deep, sub(1));
        let plus = vec!["+"; 200_000].join("/");
        index.subscribe(None, &plus, sub(2));
        assert_eq!(matched(&index, &deep), [1, 2]);
        assert!(index.unsubscribe(None, &deep, 1));
        drop(index); // and dropping the trie does not recurse either
    }
}
