//! The `ai_service` on the bus: a request or a transcript in; the intent, the device commands
//! (through the router), the spoken answer and the events out.

use std::sync::Arc;
use std::time::Duration;

use alicia_envelope::{Destination, Envelope, MessageId, ReplyStatus};
use alicia_intents::{
    intent_devices, Context, Engine, IntentMatch, NearMiss, Recognition, ResponseContext, SlotSource, Targets,
};
use alicia_sdk::{Bus, BusService, Context as BusContext, HandlerResult, ServiceError, Subscription};
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::act::{self, DeviceCommand, PlanSettings};
use crate::answer::{Action, Answer, Clock, ErrorInfo, IntentInfo, Outcome, Request, TargetInfo};
use crate::dialogue::{self, Choice, Dialogues, Pending};
use crate::home::{DeviceInfo, HomeModel};
use crate::llm::Llm;
use crate::state::DeviceStates;
use crate::timers::{Filter, Owner, Timer, TimerError, Timers};
use crate::AssistantTopics;

/// Switches of the service (see [`crate::AssistantConfig`]).
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub listen_transcripts: bool,
    pub announce_timers: bool,
    pub command_ttl: Option<u32>,
}

/// What every handler shares.
pub(crate) struct Shared {
    pub engine: Arc<Engine>,
    pub home: watch::Sender<Arc<HomeModel>>,
    pub states: DeviceStates,
    pub dialogues: Dialogues,
    pub timers: Arc<Timers>,
    pub settings: PlanSettings,
    pub topics: AssistantTopics,
    pub options: Options,
    pub llm: Option<Llm>,
}

/// Where an answer goes and what it carries along: the requester (the response's
/// destination), the id to correlate with, and the request's metadata (`session_id`,
/// `user_id`, `device_id`, ...).
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub reply_to: Destination,
    pub correlation_id: Option<MessageId>,
    pub metadata: Map<String, Value>,
}

pub(crate) struct Assistant {
    pub name: String,
    pub shared: Arc<Shared>,
}

impl BusService for Assistant {
    fn name(&self) -> &str {
        &self.name
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        if self.shared.options.listen_transcripts {
            vec![Subscription::shared(self.shared.topics.transcripts.clone())]
        } else {
            Vec::new()
        }
    }

    async fn handle(&self, ctx: &BusContext, envelope: Envelope) -> HandlerResult {
        let shared = &self.shared;
        let bus = ctx.bus();
        let metadata = envelope.payload.metadata.extra.clone();
        if ctx.topic() == shared.topics.transcripts {
            // The design document's STT response: answer it on `voice/ai/response`, addressed to
            // whoever asked for the transcript.
            if envelope.payload.metadata.status == Some(ReplyStatus::Error) {
                return Ok(None);
            }
            let req = Request::from_transcript(&envelope.payload.data, &metadata)
                .map_err(|e| ServiceError::new("invalid_transcript", e))?;
            let origin = Origin {
                reply_to: envelope.destination.clone(),
                correlation_id: envelope.correlation_id.clone().or(Some(envelope.message_id.clone())),
                metadata,
            };
            let answer = shared.process(bus, &req, &origin).await?;
            shared.publish_answer(bus, &answer, &origin);
            return Ok(None);
        }
        let req = Request::from_data(&envelope.payload.data, &metadata)
            .map_err(|e| ServiceError::new("invalid_request", e))?;
        let origin = Origin {
            reply_to: Destination::parse(&envelope.source).unwrap_or_else(|_| Destination::service(&envelope.source)),
            correlation_id: Some(envelope.message_id.clone()),
            metadata,
        };
        let answer = shared.process(bus, &req, &origin).await?;
        shared.publish_answer(bus, &answer, &origin);
        Ok(Some(serde_json::to_value(&answer)?))
    }
}

/// The primary language subtag: `en-US` → `en`.
fn primary(lang: &str) -> &str {
    lang.split(['-', '_']).next().unwrap_or(lang)
}

fn intent_info(m: &IntentMatch, by: &'static str) -> IntentInfo {
    IntentInfo {
        name: m.intent.clone(),
        slots: m.slots.iter().map(|(k, s)| (k.clone(), s.value.clone())).collect(),
        sentence: m.sentence.template.clone(),
        source: m.sentence.source.clone(),
        fuzzy: serde_json::to_value(&m.fuzzy).unwrap_or(Value::Null),
        by,
    }
}

fn targets_of(m: &IntentMatch) -> Vec<TargetInfo> {
    match &m.targets {
        Targets::Devices { devices } | Targets::Ambiguous { candidates: devices, .. } => devices
            .iter()
            .map(|t| TargetInfo { device_id: t.device_id.clone(), name: t.name.clone(), area: t.area_id.clone() })
            .collect(),
        Targets::None => Vec::new(),
    }
}

fn slot_u64(m: &IntentMatch, slot: &str) -> Option<u64> {
    m.slots
        .get(slot)
        .and_then(|s| s.value.as_f64().or_else(|| s.value.as_str()?.parse().ok()))
        .map(|v| v.max(0.0) as u64)
}

/// Which timer a timer sentence means.
fn timer_filter(m: &IntentMatch) -> Filter {
    Filter {
        hours: slot_u64(m, "start_hours"),
        minutes: slot_u64(m, "start_minutes"),
        seconds: slot_u64(m, "start_seconds"),
        name: m.slot_str("name").map(|n| n.trim().to_string()),
        area: m
            .slots
            .get("area")
            .filter(|s| s.source == SlotSource::Spoken)
            .and_then(|s| s.value.as_str().map(str::to_string)),
    }
}

/// "make me a sandwich" → "Sorry, I don't know how to make you a sandwich".
pub fn dont_know(text: &str) -> String {
    let norm = alicia_intents::normalize::normalize_words(text);
    let mut words: Vec<&str> = norm.split(' ').filter(|w| !w.is_empty()).collect();
    // Polite openings say nothing about what was asked.
    loop {
        let before = words.len();
        for opening in [
            &["please"][..],
            &["hey", "alicia"],
            &["alicia"],
            &["hey"],
            &["can", "you"],
            &["could", "you"],
            &["would", "you"],
            &["will", "you"],
            &["i", "want", "you", "to"],
            &["i'd", "like", "you", "to"],
        ] {
            if words.starts_with(opening) {
                words.drain(..opening.len());
            }
        }
        if words.len() == before {
            break;
        }
    }
    while words.last() == Some(&"please") {
        words.pop();
    }
    const QUESTION: &[&str] = &[
        "what", "what's", "who", "who's", "why", "when", "where", "which", "how", "is", "are", "do", "does", "did",
        "was", "were",
    ];
    if words.is_empty() || words.len() > 12 {
        return "Sorry, I couldn't understand that".into();
    }
    if QUESTION.contains(&words[0]) {
        return "Sorry, I don't know how to answer that".into();
    }
    // A statement ("it is so dark here"), not a request to repeat as one.
    const STATEMENT: &[&str] = &[
        "it", "it's", "its", "i", "i'm", "im", "this", "that", "there", "there's", "the", "my", "our", "we", "you",
        "your", "he", "she", "they", "a", "an", "so", "well", "oh", "yes", "no",
    ];
    if STATEMENT.contains(&words[0]) {
        return "Sorry, I don't know how to help with that".into();
    }
    let swapped: Vec<&str> = words
        .iter()
        .map(|w| match *w {
            "me" => "you",
            "my" => "your",
            "mine" => "yours",
            "myself" => "yourself",
            "i" => "you",
            "i'm" => "you're",
            "you" => "me",
            "your" => "my",
            other => other,
        })
        .collect();
    format!("Sorry, I don't know how to {}", swapped.join(" "))
}

impl Shared {
    pub fn home(&self) -> Arc<HomeModel> {
        self.home.borrow().clone()
    }

    /// Understands and carries out one request.
    pub async fn process(&self, bus: &Bus, req: &Request, origin: &Origin) -> Result<Answer, ServiceError> {
        let mut clock = Clock::start();
        let language = req.language.clone().unwrap_or_else(|| self.engine.language().to_string());
        if primary(&language) != primary(self.engine.language()) {
            return Err(ServiceError::new(
                "unsupported_language",
                format!("this assistant understands {} only, not {language}", self.engine.language()),
            ));
        }
        let home = self.home();
        let area = req
            .area
            .clone()
            .or_else(|| req.satellite.as_ref().and_then(|s| home.device(s)).and_then(|d| d.location.clone()));
        let session = req
            .session_id
            .clone()
            .or_else(|| req.satellite.as_ref().map(|s| format!("satellite:{s}")))
            .unwrap_or_else(|| format!("session-{}", MessageId::new()));
        let conversation = req
            .conversation_id
            .clone()
            .or_else(|| req.satellite.as_ref().map(|s| format!("satellite:{s}")))
            .unwrap_or_else(|| session.clone());
        let mut answer = Answer {
            session_id: session.clone(),
            conversation_id: conversation.clone(),
            text: req.text.clone(),
            language,
            satellite: req.satellite.clone(),
            area: area.clone(),
            outcome: Outcome::NoMatch,
            intent: None,
            targets: Vec::new(),
            actions: Vec::new(),
            response: String::new(),
            continue_conversation: false,
            error: None,
            timings_ms: Map::new(),
        };
        let turn = Turn {
            bus,
            req,
            origin,
            home: &home,
            session: &session,
            conversation: &conversation,
            area: area.as_deref(),
        };

        if req.text.trim().is_empty() {
            answer.response = "Sorry, I didn't catch that".into();
            answer.timings_ms = clock.finish();
            return Ok(answer);
        }

        // An open question: is this its answer?
        if let Some(p) = self.dialogues.take(&conversation) {
            let choice = dialogue::choose(&req.text, &p.candidates, &home);
            clock.lap("dialogue");
            match choice {
                Choice::Chosen(ix) => {
                    let mut m = p.m;
                    let devices = ix.iter().filter_map(|&i| p.candidates.get(i).cloned()).collect();
                    m.targets = Targets::Devices { devices };
                    self.handle_match(&turn, m, "template", &mut answer, &mut clock).await;
                    answer.timings_ms = clock.finish();
                    return Ok(answer);
                }
                Choice::Narrowed(ix) if p.asked_times < 2 => {
                    let mut m = p.m;
                    let candidates: Vec<_> = ix.iter().filter_map(|&i| p.candidates.get(i).cloned()).collect();
                    let heard = match &m.targets {
                        Targets::Ambiguous { heard, .. } => heard.clone(),
                        _ => String::new(),
                    };
                    m.targets = Targets::Ambiguous { heard, candidates };
                    self.ask_back(&turn, m, p.asked_times + 1, &mut answer);
                    answer.timings_ms = clock.finish();
                    return Ok(answer);
                }
                Choice::Cancel => {
                    answer.outcome = Outcome::Cancelled;
                    answer.response = "Okay".into();
                    answer.timings_ms = clock.finish();
                    return Ok(answer);
                }
                // Not an answer: understood on its own.
                _ => {}
            }
        }

        let ctx = area.as_deref().map(Context::in_area).unwrap_or_default();
        let recognition = self.engine.recognize(&req.text, &home.index, &ctx);
        clock.lap("recognize");
        match recognition {
            Recognition::Match(m) => self.handle_match(&turn, *m, "template", &mut answer, &mut clock).await,
            Recognition::NoMatch { closest } => {
                let mut handled = false;
                if let Some(llm) = &self.llm {
                    let understood = llm.understand(&req.text, &home, area.as_deref()).await;
                    clock.lap("llm");
                    match understood {
                        Ok(Some(m)) => {
                            self.handle_match(&turn, m, "llm", &mut answer, &mut clock).await;
                            handled = true;
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "the language model fallback did not help"),
                    }
                }
                if !handled {
                    self.no_match(&turn, &closest, &mut answer);
                }
            }
        }
        answer.timings_ms = clock.finish();
        Ok(answer)
    }

    fn no_match(&self, turn: &Turn<'_>, closest: &[NearMiss], answer: &mut Answer) {
        answer.outcome = Outcome::NoMatch;
        // A sentence that fits but names what is not there: say which name is unknown.
        let known = closest.first().and_then(|miss| {
            // "What is the meaning of life" reads as a question about a device called "meaning
            // of life": without a known name like it, it is no question about a device.
            if miss.intent == "HassGetState" && miss.suggestions.values().all(Vec::is_empty) {
                return None;
            }
            let (key, arg) = if let Some(e) = miss.unknown.get("name") {
                ("no_entity", ("entity", e))
            } else if let Some(a) = miss.unknown.get("area") {
                ("no_area", ("area", a))
            } else if let Some(f) = miss.unknown.get("floor") {
                ("no_floor", ("floor", f))
            } else {
                return None;
            };
            let args = Map::from_iter([(arg.0.to_string(), json!(arg.1))]);
            self.engine.error_response(key, &args).ok().map(|t| (key, t))
        });
        let (code, text) = known.unwrap_or(("no_intent", dont_know(&turn.req.text)));
        answer.response = text.clone();
        answer.error = Some(ErrorInfo { code: code.into(), message: text });
    }

    fn ask_back(&self, turn: &Turn<'_>, m: IntentMatch, asked_times: u32, answer: &mut Answer) {
        let question = m.clarification().unwrap_or_else(|| "Which one?".into());
        let Targets::Ambiguous { candidates, .. } = &m.targets else { return };
        answer.outcome = Outcome::Clarification;
        answer.intent = Some(intent_info(&m, "template"));
        answer.targets = targets_of(&m);
        answer.response = question.clone();
        answer.continue_conversation = true;
        let pending =
            Pending { candidates: candidates.clone(), m, question, asked: std::time::Instant::now(), asked_times };
        self.dialogues.ask(turn.conversation, pending);
    }

    fn refuse(answer: &mut Answer, code: &str, text: String) {
        answer.outcome = Outcome::Refused;
        answer.response = text.clone();
        answer.error = Some(ErrorInfo { code: code.into(), message: text });
    }

    async fn handle_match(
        &self,
        turn: &Turn<'_>,
        m: IntentMatch,
        by: &'static str,
        answer: &mut Answer,
        clock: &mut Clock,
    ) {
        answer.intent = Some(intent_info(&m, by));
        answer.targets = targets_of(&m);
        if matches!(m.targets, Targets::Ambiguous { .. }) {
            self.ask_back(turn, m, 1, answer);
            return;
        }
        if m.intent == "HassNevermind" {
            self.dialogues.forget(turn.conversation);
            answer.outcome = Outcome::Cancelled;
            answer.response = self.engine.respond(&m, &ResponseContext::default()).unwrap_or_default();
            return;
        }
        if m.intent.contains("Timer") {
            self.timer(turn, &m, answer);
            clock.lap("plan");
            return;
        }
        if let Some(key) = m.error_key() {
            let mut args = Map::new();
            if let Some(s) = m.slots.get("name") {
                args.insert("entity".into(), json!(s.text));
            }
            for k in ["area", "floor"] {
                if let Some(s) = m.slots.get(k) {
                    args.insert(k.into(), json!(s.display.clone().unwrap_or_else(|| s.text.clone())));
                }
            }
            let domain = m
                .slot_str("domain")
                .or_else(|| intent_devices(&m.intent).and_then(|(d, _)| d.first()).map(|d| d.to_string()))
                .unwrap_or_else(|| "device".into());
            args.insert("domain".into(), json!(domain));
            if let Some(c) = m.slot_str("device_class") {
                args.insert("device_class".into(), json!(c));
            }
            let text = self
                .engine
                .error_response(key, &args)
                .unwrap_or_else(|_| "Sorry, I found nothing to do that with".into());
            Self::refuse(answer, key, text);
            return;
        }
        let plan = act::plan(&m, turn.home, &self.states, &self.engine, &self.settings);
        clock.lap("plan");
        let plan = match plan {
            Ok(p) => p,
            Err(r) => {
                Self::refuse(answer, r.code, r.text);
                return;
            }
        };
        for c in &plan.commands {
            answer.actions.push(self.send_command(turn, c).await);
        }
        if let Some(message) = &plan.broadcast {
            let c = DeviceCommand {
                device_id: "speakers".into(),
                name: "every speaker".into(),
                command: "announce".into(),
                parameters: json!({ "text": message }),
            };
            let mut env =
                Envelope::command(turn.bus.name(), Destination::topic(self.topics.announce_all.clone()), c.data());
            self.stamp(&mut env, turn.origin, turn.session);
            let id = env.message_id.to_string();
            let sent = turn.bus.send(&env).await;
            answer.actions.push(Action {
                device_id: c.device_id,
                name: c.name,
                command: c.command,
                parameters: c.parameters,
                message_id: Some(id),
                status: if sent.is_ok() { "sent" } else { "failed" },
                error: sent.err().map(|e| e.to_string()),
            });
        }
        clock.lap("send");
        let mut text = match self.engine.respond(&m, &plan.extra) {
            Ok(t) if !t.trim().is_empty() => t,
            Ok(_) => "Done".into(),
            Err(e) => {
                tracing::warn!(intent = %m.intent, error = %e, "response template failed");
                "Done".into()
            }
        };
        for n in &plan.notes {
            text.push_str(". ");
            text.push_str(n);
        }
        let failed: Vec<&Action> = answer.actions.iter().filter(|a| a.status != "sent").collect();
        if !failed.is_empty() && failed.len() == answer.actions.len() {
            let text = format!(
                "Sorry, I could not reach {}",
                failed.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(" and ")
            );
            Self::refuse(answer, "bus_error", text);
            clock.lap("respond");
            return;
        }
        answer.outcome = if answer.actions.is_empty() { Outcome::Answer } else { Outcome::Action };
        answer.response = text;
        clock.lap("respond");
    }

    /// Fills the metadata every command and answer carries: the request's (session, user,
    /// satellite), and the design document's `command_source`.
    fn stamp(&self, env: &mut Envelope, origin: &Origin, session: &str) {
        let meta = &mut env.payload.metadata.extra;
        for (k, v) in &origin.metadata {
            if matches!(k.as_str(), "session_id" | "user_id" | "device_id") {
                meta.insert(k.clone(), v.clone());
            }
        }
        meta.insert("session_id".into(), json!(session));
        meta.insert("command_source".into(), json!("voice_command"));
        env.ttl = self.options.command_ttl;
    }

    async fn send_command(&self, turn: &Turn<'_>, c: &DeviceCommand) -> Action {
        let mut env = Envelope::command(turn.bus.name(), Destination::device(&c.device_id), c.data());
        self.stamp(&mut env, turn.origin, turn.session);
        if let Some(area) = turn.area {
            env.payload.metadata.extra.insert("location".into(), json!(area));
        }
        let id = env.message_id.to_string();
        let sent = turn.bus.send(&env).await;
        Action {
            device_id: c.device_id.clone(),
            name: c.name.clone(),
            command: c.command.clone(),
            parameters: c.parameters.clone(),
            message_id: Some(id),
            status: if sent.is_ok() { "sent" } else { "failed" },
            error: sent.err().map(|e| e.to_string()),
        }
    }

    /// Timer intents: the service keeps the timers.
    fn timer(&self, turn: &Turn<'_>, m: &IntentMatch, answer: &mut Answer) {
        let filter = timer_filter(m);
        let mut extra = ResponseContext::default();
        // Timers are the conversation's: "cancel the timer" on a satellite is a new session.
        let session = turn.conversation;
        let by = || {
            Duration::from_secs(
                slot_u64(m, "hours").unwrap_or(0) * 3600
                    + slot_u64(m, "minutes").unwrap_or(0) * 60
                    + slot_u64(m, "seconds").unwrap_or(0),
            )
        };
        let result: Result<TimerDone, TimerError> = match m.intent.as_str() {
            "HassStartTimer" => {
                let start = (
                    slot_u64(m, "hours").unwrap_or(0),
                    slot_u64(m, "minutes").unwrap_or(0),
                    slot_u64(m, "seconds").unwrap_or(0),
                );
                let owner = Owner {
                    session: turn.session.to_string(),
                    conversation: session.to_string(),
                    satellite: turn.req.satellite.clone(),
                    area: turn.area.map(str::to_string),
                    requester: turn.origin.reply_to.to_string(),
                    metadata: turn.origin.metadata.clone(),
                };
                let name = m.slot_str("name").map(|n| n.trim().to_string());
                self.timers.start(owner, start, name).map(|t| (Outcome::Action, Some(("timer_started", t))))
            }
            "HassCancelTimer" => {
                self.timers.cancel(session, &filter).map(|t| (Outcome::Action, Some(("timer_cancelled", t))))
            }
            "HassCancelAllTimers" => {
                let n = self.timers.cancel_all(session, filter.area.as_deref());
                extra.slots.insert("canceled".into(), json!(n));
                Ok((Outcome::Action, None))
            }
            "HassTimerStatus" => {
                let timers: Vec<Value> = self.timers.status(session, &filter).iter().map(Timer::to_template).collect();
                extra.slots.insert("timers".into(), Value::Array(timers));
                Ok((Outcome::Answer, None))
            }
            "HassPauseTimer" => {
                self.timers.set_running(session, &filter, false).map(|t| (Outcome::Action, Some(("timer_paused", t))))
            }
            "HassUnpauseTimer" => {
                self.timers.set_running(session, &filter, true).map(|t| (Outcome::Action, Some(("timer_resumed", t))))
            }
            "HassIncreaseTimer" => {
                self.timers.adjust(session, &filter, by(), true).map(|t| (Outcome::Action, Some(("timer_changed", t))))
            }
            "HassDecreaseTimer" => {
                self.timers.adjust(session, &filter, by(), false).map(|t| (Outcome::Action, Some(("timer_changed", t))))
            }
            other => {
                Self::refuse(answer, "unsupported_intent", format!("Sorry, I can't do that yet ({other})"));
                return;
            }
        };
        match result {
            Ok((outcome, event)) => {
                answer.outcome = outcome;
                answer.response = self.engine.respond(m, &extra).unwrap_or_else(|_| "Done".into());
                if let Some((kind, t)) = event {
                    let data = json!({"event": kind, "session_id": session, "satellite": turn.req.satellite,
                                      "timer": t.to_template(), "description": t.description()});
                    self.publish_event(turn.bus, data);
                }
            }
            Err(e) => {
                let text = match e {
                    TimerError::Invalid => "Sorry, I can't set a timer for that long".to_string(),
                    _ => self
                        .engine
                        .error_response(e.key(), &Map::new())
                        .unwrap_or_else(|_| "Sorry, I couldn't find that timer".into()),
                };
                Self::refuse(answer, e.key(), text);
            }
        }
    }

    /// Publishes an event on `<prefix>/voice/events` (in the background: an answer never waits
    /// for its events).
    pub fn publish_event(&self, bus: &Bus, data: Value) {
        let env = Envelope::event(bus.name(), Destination::topic(self.topics.events.clone()), data);
        let bus = bus.clone();
        tokio::spawn(async move {
            if let Err(e) = bus.send(&env).await {
                tracing::warn!(error = %e, "cannot publish a voice event");
            }
        });
    }

    /// The answer on `<prefix>/voice/ai/response` (for the TTS service and the voice
    /// pipeline), and its events on `<prefix>/voice/events`.
    pub fn publish_answer(&self, bus: &Bus, answer: &Answer, origin: &Origin) {
        let data = serde_json::to_value(answer).unwrap_or(Value::Null);
        let mut env = Envelope::new(bus.name(), origin.reply_to.clone(), alicia_envelope::MessageType::Response, data);
        env.correlation_id = origin.correlation_id.clone();
        let meta = &mut env.payload.metadata.extra;
        meta.extend(origin.metadata.clone());
        meta.insert("session_id".into(), json!(answer.session_id));
        let topic = self.topics.response.clone();
        let mut events = Vec::new();
        let summary = |kind: &str| {
            json!({
                "event": kind, "session_id": answer.session_id, "satellite": answer.satellite, "area": answer.area,
                "text": answer.text, "outcome": answer.outcome, "intent": answer.intent, "targets": answer.targets,
                "response": answer.response, "error": answer.error, "timings_ms": answer.timings_ms,
            })
        };
        events.push(match answer.outcome {
            Outcome::NoMatch => summary("no_match"),
            Outcome::Clarification => summary("clarification"),
            _ => summary("intent"),
        });
        for a in &answer.actions {
            events.push(json!({"event": "action", "session_id": answer.session_id, "device_id": a.device_id,
                               "command": a.command, "parameters": a.parameters, "message_id": a.message_id,
                               "status": a.status, "error": a.error}));
        }
        let bus = bus.clone();
        let events_topic = Destination::topic(self.topics.events.clone());
        tokio::spawn(async move {
            if let Err(e) = bus.send_to(&topic, &env, None).await {
                tracing::warn!(error = %e, "cannot publish the answer");
            }
            for data in events {
                let ev = Envelope::event(bus.name(), events_topic.clone(), data);
                if let Err(e) = bus.send(&ev).await {
                    tracing::warn!(error = %e, "cannot publish a voice event");
                }
            }
        });
    }

    /// A timer ended: say so where it was set (an event, a message on `voice/ai/response`, and
    /// an `announce` command to the satellite, else to the speakers of its area).
    pub async fn timer_done(&self, bus: &Bus, t: Timer) {
        let text = format!("Your {} timer is done", t.description());
        let o = &t.owner;
        self.publish_event(
            bus,
            json!({"event": "timer_finished", "session_id": o.session, "satellite": o.satellite,
                   "timer": t.to_template(), "description": t.description(), "response": text}),
        );
        let reply_to = Destination::parse(&o.requester).unwrap_or(Destination::Broadcast);
        let data = json!({"session_id": o.session, "satellite": o.satellite, "area": o.area,
                          "outcome": "timer_finished", "response": text, "timer": t.to_template()});
        let mut env = Envelope::event(bus.name(), reply_to, data);
        env.payload.metadata.extra.extend(o.metadata.clone());
        env.payload.metadata.extra.insert("session_id".into(), json!(o.session));
        if let Err(e) = bus.send_to(&self.topics.response, &env, None).await {
            tracing::warn!(error = %e, "cannot publish the end of a timer");
        }
        if !self.options.announce_timers {
            return;
        }
        let home = self.home();
        let speaks = |d: &&DeviceInfo| d.reachable() && (d.has("announce") || d.has("audio_playback"));
        let mut to: Vec<&DeviceInfo> =
            o.satellite.as_ref().and_then(|s| home.device(s)).filter(speaks).into_iter().collect();
        if to.is_empty() {
            if let Some(area) = &o.area {
                let mut speakers: Vec<&DeviceInfo> =
                    home.in_area(area).filter(speaks).filter(|d| !d.is_satellite()).collect();
                speakers.sort_by(|a, b| a.id.cmp(&b.id));
                to = speakers;
            }
        }
        for d in to {
            let c = DeviceCommand {
                device_id: d.id.clone(),
                name: d.name.clone(),
                command: "announce".into(),
                parameters: json!({ "text": text }),
            };
            let mut env = Envelope::command(bus.name(), Destination::device(&d.id), c.data());
            let origin =
                Origin { reply_to: Destination::Broadcast, correlation_id: None, metadata: o.metadata.clone() };
            self.stamp(&mut env, &origin, &o.session);
            if let Err(e) = bus.send(&env).await {
                tracing::warn!(device = %d.id, error = %e, "cannot announce the end of a timer");
            }
        }
    }
}

/// What a timer intent did: the outcome, and the event to publish with its timer.
type TimerDone = (Outcome, Option<(&'static str, Timer)>);

/// One request being handled.
struct Turn<'a> {
    bus: &'a Bus,
    req: &'a Request,
    origin: &'a Origin,
    home: &'a HomeModel,
    session: &'a str,
    /// The open question's key ([`Answer::conversation_id`]).
    conversation: &'a str,
    area: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polite_answers_to_what_is_not_understood() {
        assert_eq!(dont_know("Make me a sandwich."), "Sorry, I don't know how to make you a sandwich");
        assert_eq!(dont_know("could you please book my flight"), "Sorry, I don't know how to book your flight");
        assert_eq!(dont_know("What is the meaning of life?"), "Sorry, I don't know how to answer that");
        assert_eq!(dont_know("?!"), "Sorry, I couldn't understand that");
        assert_eq!(
            dont_know("It is so dark here, I need the kitchen light"),
            "Sorry, I don't know how to help with that"
        );
        assert_eq!(dont_know(&"word ".repeat(40)), "Sorry, I couldn't understand that");
    }
}
