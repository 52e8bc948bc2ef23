//! Intent understanding for Alicia: from a transcript ("turn the volume down in the kitchen")
//! to an intent, its slots, the devices it is about and the spoken answer.
//!
//! The sentences are Home Assistant's: the `home-assistant-intents` package (Apache-2.0) ships
//! them compiled to JSON per language ([`IntentsData`] loads that, and Alicia's own sentences
//! in the same format, merged). The template matcher is Alicia's own, because no Rust crate
//! implements Home Assistant's template language (hassil is Python):
//!
//! - [`template`] parses the syntax (alternatives, optionals, permutations, lists, rules,
//!   inline ranges) into expressions, with errors naming the template and the column;
//! - [`Engine::new`] compiles every sentence into one graph, expanding rules and permutations,
//!   static list values into strings, and computing a literal prefilter per sentence;
//! - [`Engine::recognize`] normalises the utterance ([`normalize`]: case, punctuation, skip
//!   and filler words), walks the graph, fills `{name}`/`{area}`/`{floor}` from the live
//!   [`HomeIndex`] (exactly, then within a few edits: "sonnos" → "Sonos"), reads numbers in
//!   digits or words ([`numbers`]), applies `requires_context`/`excludes_context` with the
//!   satellite's area ([`Context`]), resolves devices (asking back when a name fits several),
//!   and ranks the parses as Home Assistant does;
//! - [`Engine::respond`] renders the matched intent's response template (minijinja).
//!
//! ## Whose sentences
//!
//! | what | intent | sentences |
//! | --- | --- | --- |
//! | turn on/off | `HassTurnOn`, `HassTurnOff` | Home Assistant's |
//! | brightness, colour | `HassLightSet` | Home Assistant's |
//! | volume, absolute | `HassSetVolume` | Home Assistant's |
//! | volume, relative | `HassSetVolumeRelative` | Home Assistant's ("turn the volume down in the kitchen", "volume up by 10%"), plus Alicia's: "turn the kitchen speaker down", "make the bedroom speaker louder", "turn the music up" |
//! | pause, resume, next, previous, mute | `HassMediaPause`, `HassMediaUnpause`, `HassMediaNext`, `HassMediaPrevious`, `HassMediaPlayerMute`/`Unmute` | Home Assistant's |
//! | play audio | `HassMediaSearchAndPlay` | Home Assistant's |
//! | state of a device or sensor | `HassGetState`, `HassClimateGetTemperature` | Home Assistant's (temperature sensors answer the latter too: Alicia's resolution) |
//! | announce everywhere | `HassBroadcast` | Home Assistant's |
//! | announce in an area / on a speaker | `AliciaAnnounce` | Alicia's ("announce dinner is ready in the kitchen") |
//! | timers | `HassStartTimer`, `HassCancelTimer`, `HassTimerStatus`, ... | Home Assistant's |
//! | never mind | `HassNevermind` | Home Assistant's ("never mind"), plus Alicia's: "cancel", "forget it", "nothing" |
//! | filler words | skip words | Home Assistant's ("please", "could you"), plus Alicia's ("um", "uh", "hey alicia", ...) |
//!
//! Which devices an intent acts on when no name is said (media players for volume, climate
//! devices and temperature sensors for the temperature) is not in Home Assistant's data but in
//! its intent handlers; [`intent_devices`] is Alicia's table of it.
//!
//! Loading (bytes or a path) is separate from matching, so the service can fetch the data like
//! its speech models. Nothing here does I/O beyond [`IntentsData::from_path`].
//!
//! ```
//! use alicia_intents::{Engine, IntentsData, Home, HomeIndex, Area, Device, Context};
//! let data = IntentsData::from_slice(br#"{"language": "en", "skip_words": ["please"],
//!     "intents": {"HassTurnOn": {"data": [{"sentences": ["turn on [the] {name}"]}]}}}"#, "mine").unwrap();
//! let engine = Engine::new(data).unwrap();
//! let home = HomeIndex::new(Home {
//!     areas: vec![Area { id: "kitchen".into(), name: "Kitchen".into(), ..Default::default() }],
//!     devices: vec![Device { id: "lamp_1".into(), name: "Kitchen Lamp".into(), area: Some("kitchen".into()),
//!                            domain: "light".into(), ..Default::default() }],
//!     ..Default::default()
//! });
//! let r = engine.recognize("Turn on the kitchen lamp, please.", &home, &Context::default());
//! let m = r.matched().unwrap();
//! assert_eq!(m.intent, "HassTurnOn");
//! assert_eq!(m.device_ids(), ["lamp_1"]);
//! ```

#[cfg(feature = "bench-home")]
pub mod bench_home;
pub mod compile;
pub mod data;
pub mod home;
mod matcher;
pub mod normalize;
pub mod numbers;
mod resolve;
pub mod response;
pub mod result;
pub mod template;

use std::collections::BTreeMap;

pub use compile::CompileError;
pub use data::{IntentsData, IntentsFile, LoadError, Source};
pub use home::{domain_for_device_type, Area, Device, Floor, Home, HomeIndex};
pub use resolve::intent_devices;
pub use response::{ResponseContext, ResponseError};
pub use result::{FuzzyName, IntentMatch, NearMiss, Recognition, SentenceRef, Slot, SlotSource, Target, Targets};

use compile::Program;
use matcher::{CapValue, Mode, Pass};
use normalize::{find_skip_words, Normalized};
use response::Responder;

/// Alicia's own English sentences, in Home Assistant's format: what HA's English data lacks
/// (see the file's intents: `AliciaAnnounce`, more ways to say relative volume, "stop"/"cancel"
/// as never mind, filler words).
pub const ALICIA_EN: &str = include_str!("../data/alicia-en.json");

/// The name [`ALICIA_EN`] is merged under ([`SentenceRef::source`]).
pub const ALICIA_EN_SOURCE: &str = "alicia-en";

/// Where the utterance was heard, and other context for `requires_context`.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The satellite's area id: used when the utterance names no area (Home Assistant's
    /// context area), and preferred when a name fits devices in several areas.
    pub area: Option<String>,
    /// Other context values a template may require.
    pub values: BTreeMap<String, String>,
}

impl Context {
    pub fn in_area(area: &str) -> Context {
        Context { area: Some(area.to_string()), ..Default::default() }
    }
}

/// Matching settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Try names within a few edits when nothing matches exactly (default on).
    pub fuzzy: bool,
    /// How many near misses a [`Recognition::NoMatch`] lists (default 3).
    pub near_misses: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { fuzzy: true, near_misses: 3 }
    }
}

/// Compiled intents of one language.
pub struct Engine {
    prog: Program,
    language: String,
    /// Skip words, longest first.
    skip_words: Vec<String>,
    responder: Responder,
    responses: BTreeMap<String, BTreeMap<String, String>>,
    pub settings: Settings,
}

/// Why an [`Engine`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Response(#[from] ResponseError),
}

impl Engine {
    /// Compiles intents data (templates, lists, rules, responses).
    pub fn new(data: IntentsData) -> Result<Engine, EngineError> {
        let prog = compile::compile(&data)?;
        let responder = Responder::new(&data.responses.intents, &data.responses.errors)?;
        let mut skip_words: Vec<String> =
            data.skip_words.iter().map(|w| normalize::normalize_words(w)).filter(|w| !w.is_empty()).collect();
        skip_words.sort_by_key(|w| std::cmp::Reverse(w.len()));
        skip_words.dedup();
        Ok(Engine {
            prog,
            language: data.language.clone(),
            skip_words,
            responder,
            responses: data.responses.intents.clone(),
            settings: Settings::default(),
        })
    }

    /// Home Assistant's data for a language (the bytes of `home_assistant_intents/data/<lang>.json`)
    /// with Alicia's own sentences merged in (English only, for now).
    pub fn with_alicia_sentences(ha_json: &[u8], source: &str) -> Result<Engine, EngineError> {
        let mut data = IntentsData::from_slice(ha_json, source)?;
        if data.language.starts_with("en") {
            data.merge_str(ALICIA_EN, ALICIA_EN_SOURCE)?;
        }
        Engine::new(data)
    }

    pub fn language(&self) -> &str {
        &self.language
    }

    /// How many sentence templates were compiled.
    pub fn sentence_count(&self) -> usize {
        self.prog.sentences.len()
    }

    /// Names of the lists the templates expect at match time (not defined in the data).
    pub fn runtime_lists(&self) -> Vec<&str> {
        self.prog
            .lists
            .iter()
            .filter_map(|l| match &l.kind {
                compile::ListKind::Runtime(n) => Some(n.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The utterance as the matcher sees it, and with skip words removed at the edges and
    /// everywhere (each tried; a skip word can belong to a sentence: "I want" in "I want to
    /// watch TV").
    fn variants(&self, utterance: &str) -> Vec<Normalized> {
        let full = Normalized::new(utterance);
        let mut out = vec![full.clone()];
        for only_edges in [true, false] {
            let found = find_skip_words(&full.text, &self.skip_words, only_edges);
            if found.is_empty() {
                continue;
            }
            let v = full.without(&found);
            if !v.text.is_empty() && out.iter().all(|o| o.text != v.text) {
                out.push(v);
            }
        }
        out
    }

    /// Recognises one utterance against the home's devices and areas.
    pub fn recognize(&self, utterance: &str, home: &HomeIndex, ctx: &Context) -> Recognition {
        let variants = self.variants(utterance);
        let mut best: Option<resolve::Interpreted> = None;
        fn consider(best: &mut Option<resolve::Interpreted>, i: resolve::Interpreted) {
            if best.as_ref().is_none_or(|b| i.rank < b.rank) {
                *best = Some(i);
            }
        }
        for (vi, v) in variants.iter().enumerate() {
            let mut pass = Pass::new(&self.prog, home, &v.text, Mode::Exact);
            pass.run(|_| true);
            for raw in &pass.out {
                if let Some(i) = resolve::interpret(&self.prog, home, ctx, v, raw, vi as u32) {
                    consider(&mut best, i);
                }
            }
        }
        // A wildcard may have swallowed a name heard wrong ("play jazz on the kitchen sonnos"),
        // or the exact parse found nothing to act on: the fuzzy pass may find better.
        let need_fuzzy = best.as_ref().is_none_or(|b| b.rank.3 > 0 || b.rank.1 > 0);
        if self.settings.fuzzy && need_fuzzy {
            for (vi, v) in variants.iter().enumerate() {
                let mut pass = Pass::new(&self.prog, home, &v.text, Mode::Fuzzy);
                pass.run(|_| true);
                for raw in &pass.out {
                    let fuzzy = raw.caps.iter().any(|c| matches!(c.value, CapValue::Name { edits, .. } if edits > 0));
                    if !fuzzy {
                        continue;
                    }
                    if let Some(i) = resolve::interpret(&self.prog, home, ctx, v, raw, vi as u32) {
                        consider(&mut best, i);
                    }
                }
            }
        }
        if let Some(b) = best {
            return Recognition::Match(Box::new(b.m));
        }
        Recognition::NoMatch { closest: self.near_misses(&variants, home) }
    }

    /// Sentences that match when one or two names are left unknown: "turn on the garage
    /// lihgt" → HassTurnOn with `name` = "garage lihgt" and the names most like it.
    fn near_misses(&self, variants: &[Normalized], home: &HomeIndex) -> Vec<NearMiss> {
        let mut found: Vec<((usize, i64, usize), NearMiss)> = Vec::new();
        for (vi, v) in variants.iter().enumerate() {
            let mut pass = Pass::new(&self.prog, home, &v.text, Mode::Unknown);
            pass.run(|s| !self.prog.sentences[s as usize].has_wildcard);
            for raw in &pass.out {
                let unknown: Vec<_> = raw.caps.iter().filter(|c| c.value == CapValue::Unknown).collect();
                if unknown.is_empty() || unknown.len() > 2 {
                    continue;
                }
                // A near miss says something of the sentence: some of its words were heard, and
                // not all of the utterance is unknown ("make me a sandwich" is no device name).
                let unknown_words: usize =
                    unknown.iter().map(|c| v.text[c.start as usize..c.end as usize].split(' ').count()).sum();
                if raw.literal < 3 || unknown_words > 3 {
                    continue;
                }
                let sentence = &self.prog.sentences[raw.sentence as usize];
                let block = &self.prog.blocks[sentence.block as usize];
                let mut miss = NearMiss {
                    intent: block.intent.clone(),
                    sentence: SentenceRef {
                        source: block.source.0.clone(),
                        intent: block.intent.clone(),
                        block: block.index,
                        sentence: sentence.index as usize,
                        template: sentence.template.clone(),
                    },
                    unknown: BTreeMap::new(),
                    suggestions: BTreeMap::new(),
                };
                for c in unknown {
                    let slot = self.prog.slots[c.slot as usize].clone();
                    let heard = v.text[c.start as usize..c.end as usize].to_string();
                    let list = &self.prog.lists[c.list as usize];
                    if let compile::ListKind::Runtime(name) = &list.kind {
                        let close = home.list(name).map(|l| l.closest(&heard, 3)).unwrap_or_default();
                        miss.suggestions.insert(slot.clone(), close.iter().map(|e| e.display.clone()).collect());
                    }
                    miss.unknown.insert(slot, heard);
                }
                let unknown_len: usize = miss.unknown.values().map(|t| t.len()).sum();
                let key = (miss.unknown.len(), -(raw.literal as i64), unknown_len + vi);
                if !found.iter().any(|(_, m)| m.intent == miss.intent && m.unknown == miss.unknown) {
                    found.push((key, miss));
                }
            }
        }
        found.sort_by_key(|f| f.0);
        // The best reading per intent ("kettle", not also "the kettle" and "on the kettle").
        let mut out: Vec<NearMiss> = Vec::new();
        for (_, m) in found {
            if out.len() < self.settings.near_misses && out.iter().all(|o| o.intent != m.intent) {
                out.push(m);
            }
        }
        out
    }

    /// The source of a response template (`responses.intents.<intent>.<key>`).
    pub fn response_template(&self, intent: &str, key: &str) -> Option<&str> {
        self.responses.get(intent).and_then(|k| k.get(key)).map(String::as_str)
    }

    /// The spoken response of a match, from its intent's response template.
    pub fn respond(&self, m: &IntentMatch, extra: &ResponseContext) -> Result<String, ResponseError> {
        self.responder.respond(m, extra)
    }

    /// An error response (`no_intent`, `no_entity`, `no_domain_in_area`, ...) with its
    /// variables (`entity`, `area`, `domain`, ...).
    pub fn error_response(
        &self,
        key: &str,
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, ResponseError> {
        self.responder.error(key, args)
    }
}

#[cfg(test)]
mod tests {
    /// The service shares one engine and one home index between its tasks.
    #[test]
    fn engine_and_index_are_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<super::Engine>();
        shareable::<super::HomeIndex>();
        shareable::<super::Recognition>();
    }
}
