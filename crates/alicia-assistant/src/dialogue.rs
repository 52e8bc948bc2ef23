//! The conversation state of each session: a question the assistant asked back ("Which
//! speaker: kitchen or bedroom?") and the intent waiting for its answer, so the follow-up "the
//! kitchen one" completes it. Questions are kept by conversation: the request's
//! `conversation_id`, else its satellite (each utterance there is a new session), else its
//! `session_id` ([`crate::Answer::conversation_id`]); a question is forgotten after the dialogue timeout, on "never mind", or when
//! the next utterance is not an answer to it (then it is understood on its own).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use alicia_intents::home::edit_budget;
use alicia_intents::normalize::normalize_words;
use alicia_intents::{IntentMatch, Target};

use crate::home::HomeModel;

/// Most sessions with an open question at once (the oldest questions go first).
pub const MAX_SESSIONS: usize = 10_000;

/// An open question.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The intent as recognised, targets still ambiguous.
    pub m: IntentMatch,
    pub candidates: Vec<Target>,
    pub question: String,
    pub asked: Instant,
    /// How many times it was asked (a second unclear answer drops it).
    pub asked_times: u32,
}

/// Open questions by session.
#[derive(Debug)]
pub struct Dialogues {
    open: Mutex<HashMap<String, Pending>>,
    timeout: Duration,
}

impl Dialogues {
    pub fn new(timeout: Duration) -> Self {
        Dialogues { open: Mutex::new(HashMap::new()), timeout }
    }

    /// Opens (or replaces) the session's question.
    pub fn ask(&self, session: &str, pending: Pending) {
        let mut open = self.open.lock();
        if open.len() >= MAX_SESSIONS && !open.contains_key(session) {
            let timeout = self.timeout;
            open.retain(|_, p| p.asked.elapsed() < timeout);
            if open.len() >= MAX_SESSIONS {
                if let Some(oldest) = open.iter().min_by_key(|(_, p)| p.asked).map(|(k, _)| k.clone()) {
                    open.remove(&oldest);
                }
            }
        }
        open.insert(session.to_string(), pending);
    }

    /// Takes the session's open question, if it has one that has not timed out.
    pub fn take(&self, session: &str) -> Option<Pending> {
        let p = self.open.lock().remove(session)?;
        (p.asked.elapsed() < self.timeout).then_some(p)
    }

    /// Forgets the session's question.
    pub fn forget(&self, session: &str) {
        self.open.lock().remove(session);
    }

    pub fn is_open(&self, session: &str) -> bool {
        self.open.lock().get(session).is_some_and(|p| p.asked.elapsed() < self.timeout)
    }
}

/// What a follow-up says about the question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// These candidates (indexes): one, or all ("both").
    Chosen(Vec<usize>),
    /// Still more than one fits ("the speaker"): ask again about these.
    Narrowed(Vec<usize>),
    /// "Never mind", "neither".
    Cancel,
    /// Not an answer: understand it on its own.
    NotAnAnswer,
}

const CANCEL: &[&str] = &[
    "never mind",
    "nevermind",
    "cancel",
    "cancel that",
    "stop",
    "neither",
    "none",
    "none of them",
    "nothing",
    "forget it",
    "no",
];
const ALL: &[&str] = &["both", "both of them", "all", "all of them", "every one", "everywhere", "each", "all three"];
/// Words that say nothing about which one.
const FILLER: &[&str] = &[
    "the", "one", "ones", "in", "on", "at", "of", "a", "an", "please", "i", "mean", "meant", "that", "this", "it",
    "room", "yes", "my", "um", "uh", "oh", "well", "like", "s", "thanks", "thank", "you", "device", "area",
];
const ORDINALS: &[(&str, usize)] = &[("first", 0), ("second", 1), ("third", 2), ("fourth", 3), ("fifth", 4)];

fn close(heard: &str, word: &str) -> bool {
    heard == word || strsim::levenshtein(heard, word) <= edit_budget(word.chars().count()) as usize
}

/// Reads a follow-up against the candidates of the question: by area ("the kitchen one",
/// "kitchen"), by name or alias ("the bedroom speaker", "the sonos"), by position ("the
/// second one", "the last one"), all of them ("both"), or none ("never mind").
pub fn choose(text: &str, candidates: &[Target], home: &HomeModel) -> Choice {
    let norm = normalize_words(text);
    if norm.is_empty() {
        return Choice::NotAnAnswer;
    }
    if CANCEL.contains(&norm.as_str()) {
        return Choice::Cancel;
    }
    if ALL.contains(&norm.as_str()) {
        return Choice::Chosen((0..candidates.len()).collect());
    }
    let words: Vec<&str> = norm.split(' ').filter(|w| !FILLER.contains(w)).collect();
    if words.is_empty() || words.len() > 6 {
        return Choice::NotAnAnswer;
    }
    if let [w] = words.as_slice() {
        if *w == "last" {
            return Choice::Chosen(vec![candidates.len().saturating_sub(1)]);
        }
        if let Some((_, i)) = ORDINALS.iter().find(|(o, _)| o == w) {
            if *i < candidates.len() {
                return Choice::Chosen(vec![*i]);
            }
        }
    }
    let fits: Vec<usize> = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            let mut vocab: Vec<String> = Vec::new();
            let mut add = |s: &str| vocab.extend(normalize_words(s).split(' ').map(str::to_string));
            add(&c.name);
            if let Some(a) = &c.area_name {
                add(a);
            }
            if let Some(d) = home.device(&c.device_id) {
                d.aliases.iter().for_each(|a| add(a));
            }
            words.iter().all(|w| vocab.iter().any(|v| close(w, v)))
        })
        .map(|(i, _)| i)
        .collect();
    match fits.len() {
        0 => Choice::NotAnAnswer,
        1 => Choice::Chosen(fits),
        n if n == candidates.len() => Choice::NotAnAnswer,
        _ => Choice::Narrowed(fits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(id: &str, name: &str, area: &str) -> Target {
        Target {
            device_id: id.into(),
            name: name.into(),
            domain: "media_player".into(),
            area_id: Some(area.to_lowercase()),
            area_name: Some(area.into()),
        }
    }

    #[test]
    fn follow_ups_choose_by_area_name_position_or_all() {
        let home = HomeModel::default();
        let c = [
            target("k", "Kitchen Speaker", "Kitchen"),
            target("b", "Bedroom Speaker", "Bedroom"),
            target("o", "Office Radio", "Office"),
        ];
        assert_eq!(choose("the kitchen one", &c, &home), Choice::Chosen(vec![0]));
        assert_eq!(choose("Kitchen.", &c, &home), Choice::Chosen(vec![0]));
        assert_eq!(choose("the one in the bedroom please", &c, &home), Choice::Chosen(vec![1]));
        assert_eq!(choose("bedrom", &c, &home), Choice::Chosen(vec![1]), "a word heard slightly wrong");
        assert_eq!(choose("the radio", &c, &home), Choice::Chosen(vec![2]));
        assert_eq!(choose("the second one", &c, &home), Choice::Chosen(vec![1]));
        assert_eq!(choose("the last one", &c, &home), Choice::Chosen(vec![2]));
        assert_eq!(choose("all of them", &c, &home), Choice::Chosen(vec![0, 1, 2]));
        assert_eq!(choose("the speaker", &c, &home), Choice::Narrowed(vec![0, 1]));
        assert_eq!(choose("never mind", &c, &home), Choice::Cancel);
        assert_eq!(choose("turn on the lights in the garage", &c, &home), Choice::NotAnAnswer);
        assert_eq!(choose("", &c, &home), Choice::NotAnAnswer);
    }

    #[test]
    fn questions_time_out() {
        let d = Dialogues::new(Duration::from_millis(0));
        let m = dummy();
        d.ask("s", Pending { m, candidates: vec![], question: "?".into(), asked: Instant::now(), asked_times: 1 });
        assert!(d.take("s").is_none());
    }

    fn dummy() -> IntentMatch {
        IntentMatch {
            intent: "HassMediaPause".into(),
            slots: Default::default(),
            captures: Default::default(),
            targets: alicia_intents::Targets::None,
            sentence: alicia_intents::SentenceRef {
                source: String::new(),
                intent: String::new(),
                block: 0,
                sentence: 0,
                template: String::new(),
            },
            response: "default".into(),
            metadata: Default::default(),
            fuzzy: vec![],
        }
    }
}
