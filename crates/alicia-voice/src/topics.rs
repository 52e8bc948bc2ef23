//! The voice topics, under the bus prefix (`alicia` by default). See the crate documentation
//! for what travels on each.

/// Topic names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceTopics {
    prefix: String,
}

impl VoiceTopics {
    pub fn new(prefix: impl Into<String>) -> Self {
        VoiceTopics { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `P/voice/stt/request`: STT request envelopes (the design document's topic; shared).
    pub fn stt_request(&self) -> String {
        format!("{}/voice/stt/request", self.prefix)
    }

    /// `P/voice/stt/response`: every transcript, as the design document's response envelope.
    pub fn stt_response(&self) -> String {
        format!("{}/voice/stt/response", self.prefix)
    }

    /// `P/voice/stt/instances/<instance>`: retained presence of one STT instance (who owns
    /// which satellite's stream is decided from these).
    pub fn stt_instance(&self, instance: &str) -> String {
        format!("{}/voice/stt/instances/{instance}", self.prefix)
    }

    pub fn stt_instances_filter(&self) -> String {
        format!("{}/voice/stt/instances/+", self.prefix)
    }

    /// `P/voice/stt/events`: what the STT service did (transcripts of streams, refusals).
    pub fn stt_events(&self) -> String {
        format!("{}/voice/stt/events", self.prefix)
    }

    /// `P/voice/tts/request`: TTS request envelopes (shared).
    pub fn tts_request(&self) -> String {
        format!("{}/voice/tts/request", self.prefix)
    }

    /// `P/voice/tts/events`: what the TTS service said (synthesised, speaking, spoken, error).
    pub fn tts_events(&self) -> String {
        format!("{}/voice/tts/events", self.prefix)
    }

    /// `P/voice/tts/cancel`: stop speaking to a satellite (`{satellite, session_id?, reason}`;
    /// every instance hears it, the one speaking acts).
    pub fn tts_cancel(&self) -> String {
        format!("{}/voice/tts/cancel", self.prefix)
    }

    /// `P/voice/events`: the voice pipeline's and the assistant's events, per session.
    pub fn voice_events(&self) -> String {
        format!("{}/voice/events", self.prefix)
    }

    /// `P/voice/ai/response`: the assistant's answers, which the TTS service speaks.
    pub fn ai_response(&self) -> String {
        format!("{}/voice/ai/response", self.prefix)
    }

    /// `P/voice/sat/<id>/mic`: what satellite `id` sends (Wyoming events, one per message).
    pub fn mic(&self, satellite: &str) -> String {
        format!("{}/voice/sat/{satellite}/mic", self.prefix)
    }

    /// `P/voice/sat/<id>/snd`: what is sent to satellite `id` (transcripts, speech).
    pub fn snd(&self, satellite: &str) -> String {
        format!("{}/voice/sat/{satellite}/snd", self.prefix)
    }

    /// `P/voice/sat/+/mic`: every satellite's microphone.
    pub fn mic_filter(&self) -> String {
        self.mic("+")
    }

    /// The satellite of a `P/voice/sat/<id>/<leaf>` topic.
    pub fn satellite_of<'a>(&self, topic: &'a str, leaf: &str) -> Option<&'a str> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix("/voice/sat/")?;
        let id = rest.strip_suffix(leaf)?.strip_suffix('/')?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }

    /// `P/system/services/<name>/health`: the retained health document of a service
    /// (`{"status": "ok"|"unavailable", "reason", "fix"}`), which the monitor turns into an alert.
    pub fn health(&self, service: &str) -> String {
        format!("{}/system/services/{service}/health", self.prefix)
    }

    /// `P/system/discovery/register`.
    pub fn register(&self) -> String {
        format!("{}/system/discovery/register", self.prefix)
    }

    /// `P/system/discovery/heartbeat`.
    pub fn heartbeat(&self) -> String {
        format!("{}/system/discovery/heartbeat", self.prefix)
    }

    /// `P/system/discovery/rebirth`: the registry asks everyone to register again.
    pub fn rebirth(&self) -> String {
        format!("{}/system/discovery/rebirth", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let t = VoiceTopics::new("alicia");
        assert_eq!(t.mic("kitchen_sat"), "alicia/voice/sat/kitchen_sat/mic");
        assert_eq!(t.satellite_of("alicia/voice/sat/kitchen_sat/mic", "mic"), Some("kitchen_sat"));
        assert_eq!(t.satellite_of("alicia/voice/sat/a/b/mic", "mic"), None);
        assert_eq!(t.satellite_of("alicia/voice/sat//mic", "mic"), None);
        assert_eq!(t.satellite_of("other/voice/sat/x/mic", "mic"), None);
        assert_eq!(t.satellite_of("alicia/voice/sat/x/snd", "mic"), None);
        assert_eq!(t.stt_response(), "alicia/voice/stt/response");
    }
}
