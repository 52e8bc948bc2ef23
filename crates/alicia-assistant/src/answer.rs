//! What the service answers: the request it understood and everything it did, stage by stage,
//! with timings. This is `payload.data` of the response to a request, of the message on
//! `<prefix>/voice/ai/response`, and what `alicia ask` prints.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

/// A request to the assistant: typed text, or a transcript from the STT service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    pub text: String,
    pub session_id: Option<String>,
    /// The conversation this continues (an earlier answer's `conversation_id`), as in Home
    /// Assistant's conversation API.
    pub conversation_id: Option<String>,
    /// The device that heard it (its registered location is the context area).
    pub satellite: Option<String>,
    /// `en`, `en-US`: only the primary subtag is compared with the engine's language.
    pub language: Option<String>,
    /// The area to assume when the utterance names none (overrides the satellite's).
    pub area: Option<String>,
    pub user_id: Option<String>,
    /// The transcript's confidence, when it came from speech.
    pub confidence: Option<f64>,
}

/// Longest text accepted, in bytes.
pub const MAX_TEXT: usize = 2000;

fn str_field(data: &Value, metadata: &Map<String, Value>, keys: &[&str]) -> Result<Option<String>, String> {
    for k in keys {
        match data.get(*k).or_else(|| metadata.get(*k)) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) if s.trim().is_empty() => continue,
            Some(Value::String(s)) => {
                if s.len() > 256 {
                    return Err(format!("`{k}` is longer than 256 bytes"));
                }
                return Ok(Some(s.trim().to_string()));
            }
            Some(other) => {
                return Err(format!("`{k}` must be a string, found {}", alicia_envelope::json_type_name(other)))
            }
        }
    }
    Ok(None)
}

impl Request {
    /// A request to the inbox: `{"text", "session_id"?, "satellite"?/"device_id"?, "language"?,
    /// "area"?}`; `session_id`, `device_id`, `user_id` may also be in `payload.metadata` (where
    /// the design document's voice messages put them).
    pub fn from_data(data: &Value, metadata: &Map<String, Value>) -> Result<Request, String> {
        if !data.is_object() {
            return Err(format!(
                "the request is a JSON object with `text`, found {}",
                alicia_envelope::json_type_name(data)
            ));
        }
        let text = match data.get("text") {
            Some(Value::String(t)) => t.clone(),
            None | Some(Value::Null) => return Err("`text` is missing".into()),
            Some(other) => {
                return Err(format!("`text` must be a string, found {}", alicia_envelope::json_type_name(other)))
            }
        };
        Self::build(text, data, metadata)
    }

    /// A transcript from `<prefix>/voice/stt/response`, in the design document's format:
    /// `data` = `{"transcription", "confidence", "language"}`, `metadata` = the STT request's
    /// (`session_id`, `user_id`, `device_id`).
    pub fn from_transcript(data: &Value, metadata: &Map<String, Value>) -> Result<Request, String> {
        let text = match data.get("transcription").or_else(|| data.get("text")) {
            Some(Value::String(t)) => t.clone(),
            _ => return Err("the transcript has no `transcription` text".into()),
        };
        let mut r = Self::build(text, data, metadata)?;
        r.confidence = data.get("confidence").and_then(Value::as_f64);
        Ok(r)
    }

    fn build(text: String, data: &Value, metadata: &Map<String, Value>) -> Result<Request, String> {
        if text.len() > MAX_TEXT {
            return Err(format!("`text` is longer than {MAX_TEXT} bytes"));
        }
        Ok(Request {
            text,
            session_id: str_field(data, metadata, &["session_id"])?,
            conversation_id: str_field(data, metadata, &["conversation_id"])?,
            satellite: str_field(data, metadata, &["satellite", "device_id"])?,
            language: str_field(data, metadata, &["language"])?,
            area: str_field(data, metadata, &["area"])?,
            user_id: str_field(data, metadata, &["user_id"])?,
            confidence: None,
        })
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Commands went to devices (or a timer was set, cancelled, changed).
    Action,
    /// A question was answered (state, timer status).
    Answer,
    /// The assistant asks back; the next utterance of the session answers it.
    Clarification,
    /// "Never mind".
    Cancelled,
    /// Nothing understood (the response says so politely).
    NoMatch,
    /// Understood, but it cannot be done (offline, not supported, not found).
    Refused,
}

/// The intent recognised.
#[derive(Debug, Clone, Serialize)]
pub struct IntentInfo {
    pub name: String,
    /// Slot values (numbers as numbers, areas as ids, names as the device's name).
    pub slots: Map<String, Value>,
    pub sentence: String,
    pub source: String,
    /// Names heard within a few edits: `[{slot, heard, matched, edits}]`.
    pub fuzzy: Value,
    /// Which way it was understood: `template` (sentences) or `llm` (the fallback model).
    pub by: &'static str,
}

/// A device acted on.
#[derive(Debug, Clone, Serialize)]
pub struct TargetInfo {
    pub device_id: String,
    pub name: String,
    pub area: Option<String>,
}

/// A command sent (or not).
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub device_id: String,
    pub name: String,
    pub command: String,
    pub parameters: Value,
    /// The command envelope's `message_id`.
    pub message_id: Option<String>,
    /// `sent`, or `failed` with `error`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A refusal or failure, for programs.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}

/// The answer.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub session_id: String,
    /// What an open question is kept under: the request's `conversation_id`, else its
    /// satellite's (`satellite:ID`: every utterance on a satellite is a new session, and the
    /// answer to a question comes in the next one), else its session. Send it back as
    /// `conversation_id` to answer the question from elsewhere.
    pub conversation_id: String,
    pub text: String,
    pub language: String,
    pub satellite: Option<String>,
    /// The context area used (the satellite's or the request's).
    pub area: Option<String>,
    pub outcome: Outcome,
    pub intent: Option<IntentInfo>,
    pub targets: Vec<TargetInfo>,
    pub actions: Vec<Action>,
    /// The spoken answer.
    pub response: String,
    /// True when the assistant asked a question: the satellite should listen again.
    pub continue_conversation: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Milliseconds per stage, in order (`dialogue`, `recognize`, `llm`, `plan`, `send`,
    /// `respond`), and `total`.
    pub timings_ms: Map<String, Value>,
}

/// Stage timings.
pub struct Clock {
    start: Instant,
    last: Instant,
    stages: Vec<(&'static str, Duration)>,
}

fn ms(d: Duration) -> Value {
    let v = (d.as_secs_f64() * 1e6).round() / 1e3;
    serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null)
}

impl Clock {
    pub fn start() -> Clock {
        let now = Instant::now();
        Clock { start: now, last: now, stages: Vec::new() }
    }

    /// Ends a stage: the time since the previous one ended. A stage run twice adds up.
    pub fn lap(&mut self, stage: &'static str) {
        let now = Instant::now();
        let d = now - self.last;
        self.last = now;
        match self.stages.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, total)) => *total += d,
            None => self.stages.push((stage, d)),
        }
    }

    pub fn finish(self) -> Map<String, Value> {
        let mut m: Map<String, Value> = self.stages.into_iter().map(|(s, d)| (s.to_string(), ms(d))).collect();
        m.insert("total".into(), ms(self.start.elapsed()));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_and_transcripts_are_read_with_their_metadata() {
        let meta: Map<String, Value> = serde_json::from_value(
            json!({"session_id": "session-123", "user_id": "user-456", "device_id": "microphone-001"}),
        )
        .unwrap();
        let r = Request::from_transcript(
            &json!({"transcription": "turn on the lights", "confidence": 0.93, "language": "en-US"}),
            &meta,
        )
        .unwrap();
        assert_eq!(r.text, "turn on the lights");
        assert_eq!(r.session_id.as_deref(), Some("session-123"));
        assert_eq!(r.satellite.as_deref(), Some("microphone-001"));
        assert_eq!(r.language.as_deref(), Some("en-US"));
        assert_eq!(r.confidence, Some(0.93));
        let r = Request::from_data(&json!({"text": "hi", "satellite": "sat1", "session_id": "s"}), &meta).unwrap();
        assert_eq!((r.satellite.as_deref(), r.session_id.as_deref()), (Some("sat1"), Some("s")));
        for (bad, why) in [
            (json!("text"), "JSON object"),
            (json!({}), "`text` is missing"),
            (json!({"text": 3}), "`text` must be a string"),
            (json!({"text": "x", "session_id": []}), "`session_id` must be a string"),
            (json!({"text": "x".repeat(MAX_TEXT + 1)}), "longer than"),
        ] {
            let e = Request::from_data(&bad, &Map::new()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
