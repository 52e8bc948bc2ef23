//! Engine-level voice benchmarks (`cargo bench -p alicia-voice-bench --bench voice_engine`,
//! under `flock /work/cpu.lock` on the shared machine): Whisper tiny.en latency on a ~2 s
//! utterance, Piper time to first audio for a short sentence, and word error rate on utterances
//! synthesised by espeak-ng and by the Piper voice, each compared in the same run with the
//! Python references (faster-whisper on the same tiny.en weights, piper-tts on the same voice;
//! `reference.py`). Results go to docs/benchmarks.md by hand, with the command.
//!
//! This library holds what the bench computes that deserves tests: word error rate.

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
