//! Engine-level voice benchmarks (`cargo bench -p alicia-voice-bench --bench voice_engine`,
//! under `flock /work/cpu.lock` on the shared machine): Whisper tiny.en latency on a ~2 s
//! utterance, Piper time to first audio for a short sentence, and word error rate on utterances
//! synthesised by espeak-ng and by the Piper voice, each compared in the same run with the
//! Python references (faster-whisper on the same tiny.en weights, piper-tts on the same voice;
//! `reference.py`). Results go to docs/benchmarks.md by hand, with the command.
//!
//! This library holds what the engine bench and the bus-level `alicia bench --scenario voice`
//! share: the utterances, the TTS sentence, the Python references' script, and word error
//! rate (which deserves tests). It has no dependencies, so `alicia-bench` can use it.

/// The utterances both benches synthesise (espeak-ng and the Piper voice) and transcribe:
/// home commands and questions, no digits.
pub const CORPUS: [&str; 20] = [
    "Turn on the kitchen light.",
    "Turn off the living room lights.",
    "What is the weather like tomorrow?",
    "Set a timer for the pasta.",
    "Play some music in the bedroom.",
    "Lock the front door.",
    "Is the garage door open?",
    "Dim the lights in the dining room.",
    "What time is it?",
    "Remind me to call my mother tonight.",
    "Close the blinds in the office.",
    "Start the vacuum cleaner.",
    "How warm is it in the house?",
    "Good morning.",
    "Add milk to the shopping list.",
    "Stop the music.",
    "Open the curtains in the living room.",
    "Turn the heating down a little.",
    "Who is at the front door?",
    "Good night.",
];

/// The short sentence time to first audio is measured on.
pub const TTS_TEXT: &str = "Turn on the kitchen light.";

/// `reference.py`: faster-whisper and piper-tts on the same audio and weights. It reads a JSON
/// job on standard input and prints a JSON result (see the script).
pub const REFERENCE_PY: &str = include_str!("../reference.py");

/// The PyPI packages the references need, pinned (what docs/benchmarks.md's runs used).
pub const REFERENCE_PACKAGES: [&str; 2] = ["faster-whisper==1.2.1", "piper-tts==1.8.0"];

/// Lowercase words without punctuation (apostrophes kept, hyphens split).
pub fn normalize(text: &str) -> Vec<String> {
    let cleaned: String =
        text.to_lowercase().chars().map(|c| if c.is_alphanumeric() || c == '\'' { c } else { ' ' }).collect();
    cleaned.split_whitespace().map(str::to_string).collect()
}

/// Word-level edit distance (substitutions + insertions + deletions) between a reference and a
/// hypothesis.
pub fn word_errors(reference: &[String], hypothesis: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut cur = vec![i + 1; hypothesis.len() + 1];
        for (j, h) in hypothesis.iter().enumerate() {
            let sub = prev[j] + usize::from(r != h);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[hypothesis.len()]
}

/// Corpus word error rate: total errors / total reference words.
pub fn wer<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> f64 {
    let (mut errors, mut words) = (0, 0);
    for (r, h) in pairs {
        let (r, h) = (normalize(r), normalize(h));
        errors += word_errors(&r, &h);
        words += r.len();
    }
    if words == 0 {
        0.0
    } else {
        errors as f64 / words as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wer_counts_substitutions_insertions_deletions() {
        assert_eq!(wer([("Turn on the light.", "turn on the light")]), 0.0);
        assert_eq!(wer([("turn on the light", "turn off the light")]), 0.25);
        assert_eq!(wer([("turn on the light", "turn on the the light")]), 0.25);
        assert_eq!(wer([("turn on the light", "turn light")]), 0.5);
        assert_eq!(wer([("a b", "a b"), ("c d", "x")]), 0.5);
        assert_eq!(normalize("Living-room, isn't it?"), ["living", "room", "isn't", "it"]);
    }
}
