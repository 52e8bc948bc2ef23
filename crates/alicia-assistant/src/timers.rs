//! Timers the assistant keeps ("set a timer for five minutes named pizza"): started, paused,
//! lengthened, cancelled and reported on by voice, and announced when done. Each running timer
//! is a tokio task sleeping until its end; the service hears the ones that finish on a channel.
//!
//! A timer belongs to the conversation that set it: its satellite (every utterance there is a
//! new session), else its session (Home Assistant keeps timers per satellite too): "cancel the
//! timer" means that one's timers; a name, a start length or an
//! area ("cancel the kitchen timer") finds any.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use alicia_intents::normalize::normalize_words;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Longest timer (Home Assistant's sentences say up to 100 hours).
pub const MAX_LENGTH: Duration = Duration::from_secs(100 * 3600);
/// Most timers at once, all owners together.
pub const MAX_TIMERS: usize = 10_000;

/// Who set a timer and where to say it is done.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Owner {
    /// The session that set it (named in its events).
    pub session: String,
    /// Whose timers it is among ([`crate::Answer::conversation_id`]: the satellite's, else
    /// the session's).
    pub conversation: String,
    pub satellite: Option<String>,
    /// The area it was set in (the satellite's).
    pub area: Option<String>,
    /// Who asked (to address the "done" message to), and the request's metadata.
    pub requester: String,
    pub metadata: serde_json::Map<String, Value>,
}

/// A timer as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Timer {
    pub id: u64,
    pub owner: Owner,
    pub name: Option<String>,
    /// The length it was started with, as said (hours, minutes, seconds).
    pub start: (u64, u64, u64),
    pub length: Duration,
    /// Left now (for a paused timer, what was left when it paused).
    pub left: Duration,
    pub active: bool,
}

impl Timer {
    /// "5 minute", "1 hour and 30 minute", "pizza".
    pub fn description(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let (h, m, s) = self.start;
        let parts: Vec<String> = [(h, "hour"), (m, "minute"), (s, "second")]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, unit)| format!("{n} {unit}"))
            .collect();
        parts.join(" and ")
    }

    /// What Home Assistant's timer responses read (`slots.timers`).
    pub fn to_template(&self) -> Value {
        let left = self.left.as_secs();
        let (h, m, s) = (left / 3600, (left % 3600) / 60, left % 60);
        // Rounded as spoken: no seconds once there are hours, seconds to 5 once there are minutes.
        let (rh, rm, rs) = if h > 0 {
            let m = if s >= 30 { m + 1 } else { m };
            if m == 60 {
                (h + 1, 0, 0)
            } else {
                (h, m, 0)
            }
        } else if m > 0 {
            let s5 = ((s + 2) / 5) * 5;
            if s5 == 60 {
                (0, m + 1, 0)
            } else {
                (0, m, s5)
            }
        } else {
            (0, 0, s)
        };
        json!({
            "id": self.id.to_string(),
            "name": self.name,
            "area": self.owner.area,
            "is_active": self.active,
            "start_hours": self.start.0, "start_minutes": self.start.1, "start_seconds": self.start.2,
            "total_seconds_left": left,
            "rounded_hours_left": rh, "rounded_minutes_left": rm, "rounded_seconds_left": rs,
        })
    }
}

struct Entry {
    timer: Timer,
    /// When it ends (running timers).
    ends: Option<Instant>,
    task: Option<JoinHandle<()>>,
}

/// Which timer a sentence means: its start length, name or area (each optional).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub hours: Option<u64>,
    pub minutes: Option<u64>,
    pub seconds: Option<u64>,
    pub name: Option<String>,
    pub area: Option<String>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    fn fits(&self, t: &Timer) -> bool {
        let (h, m, s) = t.start;
        self.hours.is_none_or(|x| x == h)
            && self.minutes.is_none_or(|x| x == m)
            && self.seconds.is_none_or(|x| x == s)
            && self
                .name
                .as_ref()
                .is_none_or(|n| t.name.as_ref().is_some_and(|tn| normalize_words(tn) == normalize_words(n)))
            && self.area.as_ref().is_none_or(|a| t.owner.area.as_ref() == Some(a))
    }
}

/// Why a timer operation did nothing: Home Assistant's error keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerError {
    /// `timer_not_found`
    NotFound,
    /// `multiple_timers_matched`
    Several,
    /// Zero length, too long, or too many timers.
    Invalid,
}

impl TimerError {
    pub fn key(self) -> &'static str {
        match self {
            TimerError::NotFound => "timer_not_found",
            TimerError::Several => "multiple_timers_matched",
            TimerError::Invalid => "invalid_timer",
        }
    }
}

/// The timers of every session.
pub struct Timers {
    entries: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
    done: mpsc::UnboundedSender<Timer>,
}

impl Timers {
    /// Timers that announce their end on the returned channel.
    pub fn new() -> (Arc<Timers>, mpsc::UnboundedReceiver<Timer>) {
        let (done, rx) = mpsc::unbounded_channel();
        (Arc::new(Timers { entries: Mutex::new(HashMap::new()), next: AtomicU64::new(1), done }), rx)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock()
    }

    fn spawn(self: &Arc<Self>, id: u64, ends: Instant) -> JoinHandle<()> {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(ends).await;
            let Some(me) = me.upgrade() else { return };
            let finished = me.lock().remove(&id);
            if let Some(mut e) = finished {
                e.timer.left = Duration::ZERO;
                let _ = me.done.send(e.timer);
            }
        })
    }

    /// Starts a timer of `start` (hours, minutes, seconds as said).
    pub fn start(
        self: &Arc<Self>,
        owner: Owner,
        start: (u64, u64, u64),
        name: Option<String>,
    ) -> Result<Timer, TimerError> {
        let secs = start.0.saturating_mul(3600).saturating_add(start.1.saturating_mul(60)).saturating_add(start.2);
        let length = Duration::from_secs(secs);
        if length.is_zero() || length > MAX_LENGTH {
            return Err(TimerError::Invalid);
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_TIMERS {
            return Err(TimerError::Invalid);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let timer =
            Timer { id, owner, name: name.filter(|n| !n.trim().is_empty()), start, length, left: length, active: true };
        let ends = Instant::now() + length;
        let task = self.spawn(id, ends);
        entries.insert(id, Entry { timer: timer.clone(), ends: Some(ends), task: Some(task) });
        Ok(timer)
    }

    fn current(e: &Entry) -> Timer {
        let mut t = e.timer.clone();
        if let Some(ends) = e.ends {
            t.left = ends.saturating_duration_since(Instant::now());
        }
        t
    }

    /// The timers a sentence means, the session's own first.
    fn matching(&self, session: &str, filter: &Filter) -> Vec<u64> {
        let entries = self.lock();
        let own: Vec<u64> = entries
            .values()
            .filter(|e| e.timer.owner.conversation == session && filter.fits(&e.timer))
            .map(|e| e.timer.id)
            .collect();
        if !own.is_empty() || filter.is_empty() {
            return own;
        }
        entries.values().filter(|e| filter.fits(&e.timer)).map(|e| e.timer.id).collect()
    }

    fn one(&self, session: &str, filter: &Filter) -> Result<u64, TimerError> {
        match self.matching(session, filter).as_slice() {
            [] => Err(TimerError::NotFound),
            [one] => Ok(*one),
            _ => Err(TimerError::Several),
        }
    }

    /// Cancels the one timer the sentence means.
    pub fn cancel(&self, session: &str, filter: &Filter) -> Result<Timer, TimerError> {
        let id = self.one(session, filter)?;
        let e = self.lock().remove(&id).ok_or(TimerError::NotFound)?;
        if let Some(t) = &e.task {
            t.abort();
        }
        Ok(Self::current(&e))
    }

    /// Cancels every timer of the session (or of the area); returns how many.
    pub fn cancel_all(&self, session: &str, area: Option<&str>) -> usize {
        let mut entries = self.lock();
        let ids: Vec<u64> = entries
            .values()
            .filter(|e| match area {
                Some(a) => e.timer.owner.area.as_deref() == Some(a),
                None => e.timer.owner.conversation == session,
            })
            .map(|e| e.timer.id)
            .collect();
        for id in &ids {
            if let Some(task) = entries.remove(id).and_then(|e| e.task) {
                task.abort();
            }
        }
        ids.len()
    }

    /// The timers the sentence means (all of the session's without a filter), soonest first.
    pub fn status(&self, session: &str, filter: &Filter) -> Vec<Timer> {
        let ids = self.matching(session, filter);
        let entries = self.lock();
        let mut out: Vec<Timer> = ids.iter().filter_map(|id| entries.get(id)).map(Self::current).collect();
        out.sort_by_key(|t| t.left);
        out
    }

    /// Pauses (`false`) or resumes (`true`) the timer the sentence means.
    pub fn set_running(self: &Arc<Self>, session: &str, filter: &Filter, running: bool) -> Result<Timer, TimerError> {
        let id = self.one(session, filter)?;
        let mut entries = self.lock();
        let e = entries.get_mut(&id).ok_or(TimerError::NotFound)?;
        let now = Instant::now();
        match (running, e.ends) {
            (false, Some(ends)) => {
                if let Some(t) = e.task.take() {
                    t.abort();
                }
                e.timer.left = ends.saturating_duration_since(now);
                e.ends = None;
                e.timer.active = false;
            }
            (true, None) => {
                let ends = now + e.timer.left;
                e.ends = Some(ends);
                e.timer.active = true;
                e.task = Some(self.spawn(id, ends));
            }
            _ => {}
        }
        Ok(Self::current(e))
    }

    /// Adds (or with `add` false, removes) time to the timer the sentence means.
    pub fn adjust(
        self: &Arc<Self>,
        session: &str,
        filter: &Filter,
        by: Duration,
        add: bool,
    ) -> Result<Timer, TimerError> {
        let id = self.one(session, filter)?;
        let mut entries = self.lock();
        let e = entries.get_mut(&id).ok_or(TimerError::NotFound)?;
        let now = Instant::now();
        let left = e.ends.map(|x| x.saturating_duration_since(now)).unwrap_or(e.timer.left);
        let left = if add { (left + by).min(MAX_LENGTH) } else { left.saturating_sub(by) };
        e.timer.left = left;
        if e.ends.is_some() {
            if let Some(t) = e.task.take() {
                t.abort();
            }
            let ends = now + left;
            e.ends = Some(ends);
            e.task = Some(self.spawn(id, ends));
        }
        Ok(Self::current(e))
    }
}

impl Drop for Timers {
    fn drop(&mut self) {
        for e in self.entries.get_mut().values() {
            if let Some(t) = &e.task {
                t.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(s: &str) -> Owner {
        Owner { session: s.into(), conversation: s.into(), ..Default::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn timers_run_pause_and_finish() {
        let (timers, mut done) = Timers::new();
        let a = timers.start(owner("s1"), (0, 5, 0), None).unwrap();
        let b = timers.start(owner("s1"), (0, 0, 30), Some("pizza".into())).unwrap();
        timers.start(owner("s2"), (1, 0, 0), None).unwrap();
        assert_eq!(a.description(), "5 minute");
        assert_eq!(timers.status("s1", &Filter::default()).len(), 2);
        // Two timers: "cancel the timer" is ambiguous; by length or name it is not.
        assert_eq!(timers.cancel("s1", &Filter::default()), Err(TimerError::Several));
        let f = Filter { minutes: Some(5), ..Default::default() };
        timers.set_running("s1", &f, false).unwrap();
        tokio::time::advance(Duration::from_secs(31)).await;
        let finished = done.recv().await.unwrap();
        assert_eq!((finished.id, finished.description()), (b.id, "pizza".to_string()));
        // The paused one kept its time.
        let st = timers.status("s1", &Filter::default());
        assert_eq!((st.len(), st[0].left, st[0].active), (1, Duration::from_secs(300), false));
        assert_eq!(st[0].to_template()["rounded_minutes_left"], 5);
        timers.set_running("s1", &f, true).unwrap();
        timers.adjust("s1", &f, Duration::from_secs(60), false).unwrap();
        tokio::time::advance(Duration::from_secs(241)).await;
        assert_eq!(done.recv().await.unwrap().id, a.id);
        // Another session's timer, by its length.
        let f = Filter { hours: Some(1), ..Default::default() };
        assert_eq!(timers.cancel("s1", &f).unwrap().owner.session, "s2");
        assert_eq!(timers.cancel("s1", &Filter::default()), Err(TimerError::NotFound));
        assert_eq!(timers.start(owner("s1"), (0, 0, 0), None), Err(TimerError::Invalid));
    }
}
