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
pub struct Sub {
    /// The subscribing session.
    pub session: Arc<SessionHandle>,
    /// Its options.
    pub options: SubscriptionOptions,
    /// Its subscription identifier (v5).
    pub id: Option<u32>,
}

/// A shared subscription group (`$share/GROUP/FILTER`): each message goes to one member.
#[derive(Debug, Default)]
pub struct Group {
    /// Members in subscription order.
    pub members: Vec<Sub>,
    /// Round-robin cursor.
    pub next: AtomicUsize,
}

impl Group {
    /// Picks the next member, preferring members that are online.
    pub fn pick(&self) -> Option<&Sub> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.members[(start + i) % n])
            .find(|s| s.session.online.load(Ordering::Relaxed))
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
pub struct Matches<'a> {
    /// Plain subscriptions (may contain several entries for one session).
    pub subs: Vec<&'a Sub>,
    /// Shared groups; the caller picks one member from each.
    pub groups: Vec<&'a Group>,
}

/// Snapshot of the index at one moment.
pub struct Snapshot(arc_swap::Guard<Arc<Node>>);

impl Snapshot {
    /// Collects every subscription whose filter matches `topic`.
    pub fn matches<'a>(&'a self, topic: &str, out: &mut Matches<'a>) {
        let dollar = topic.starts_with('$');
        let mut levels: [&str; 16] = [""; 16];
        let mut n = 0;
        for level in topic.split('/') {
            if n == levels.len() {
                // Deep topics are rare: fall back to a heap-allocated list.
                let levels: Vec<&str> = topic.split('/').collect();
                walk(&self.0, &levels, 0, dollar, out);
                return;
            }
            levels[n] = level;
            n += 1;
        }
        walk(&self.0, &levels[..n], 0, dollar, out);
    }
}

fn collect<'a>(node: &'a Node, out: &mut Matches<'a>) {
    out.subs.extend(node.subs.iter());
    out.groups.extend(node.groups.iter().map(|(_, g)| &**g));
}

fn walk<'a>(node: &'a Node, levels: &[&str], i: usize, dollar: bool, out: &mut Matches<'a>) {
    let wild_ok = !(i == 0 && dollar);
    if i == levels.len() {
        collect(node, out);
        // "a/#" also matches "a".
        if let Some(h) = node.children.get("#") {
            collect(h, out);
        }
        return;
    }
    if wild_ok {
        if let Some(h) = node.children.get("#") {
            collect(h, out);
        }
        if let Some(p) = node.children.get("+") {
            walk(p, levels, i + 1, dollar, out);
        }
    }
    if let Some(c) = node.children.get(levels[i]) {
        walk(c, levels, i + 1, dollar, out);
    }
}

/// The index itself.
#[derive(Default)]
pub struct Index {
    root: ArcSwap<Node>,
    writer: Mutex<()>,
    count: AtomicUsize,
}

impl Index {
    /// The current snapshot, for matching.
    ///
    /// `ArcSwap::load` borrows a per-thread debt slot instead of bumping the shared reference
    /// count, so concurrent publishers do not contend on one cache line.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(self.root.load())
    }

    /// Number of subscriptions (shared members included).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds or replaces the subscription of `sub.session` to `filter` (in `group` if shared).
    /// Returns true if it already existed.
    pub fn subscribe(&self, group: Option<&str>, filter: &str, sub: Sub) -> bool {
        let _w = self.writer.lock();
        let mut existed = false;
        let root = update(Some(&self.root.load()), &levels(filter), &mut |node| {
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
    pub fn unsubscribe(&self, group: Option<&str>, filter: &str, session_id: u64) -> bool {
        let _w = self.writer.lock();
        let mut existed = false;
        let root = update(Some(&self.root.load()), &levels(filter), &mut |node| match group {
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

/// Copies the path to `levels`, applies `f` to the last node, prunes nodes left empty.
fn update(node: Option<&Node>, levels: &[&str], f: &mut dyn FnMut(&mut Node)) -> Arc<Node> {
    let mut copy = node.cloned().unwrap_or_default();
    match levels.split_first() {
        None => f(&mut copy),
        Some((first, rest)) => {
            let child = copy.children.get(*first).cloned();
            let new_child = update(child.as_deref(), rest, f);
            if new_child.is_empty() {
                copy.children.remove(*first);
            } else {
                copy.children.insert((*first).into(), new_child);
            }
        }
    }
    Arc::new(copy)
}
