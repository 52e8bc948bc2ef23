//! Text → sentences → IPA phonemes (espeak-ng) → Piper phoneme ids.
//!
//! Checked against the reference: for the benchmark's sentences the ids equal piper-tts's
//! (`PiperVoice.phonemize` + `phonemes_to_ids`), see `alicia-voice-bench`. One difference on
//! purpose: text that ends without punctuation gets a final `.` (see [`phonemize`]).
//!
//! espeak-ng is GPL-3.0: it runs as a subprocess (`espeak-ng -q --ipa -v <voice>`, text on
//! standard input, one line of phonemes per clause out), never linked. Its command line drops
//! punctuation, which Piper voices are trained with (`,` `.` `?` `!` have ids and shape
//! intonation and pauses), so clauses are split here first and each clause's punctuation is put
//! back after its phonemes, as Piper's own phonemizer does.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};

use unicode_normalization::UnicodeNormalization;

use crate::TtsError;

/// Splits text into sentences: after `.`, `!`, `?` (or `…`) followed by white space, and at line
/// breaks. Empty pieces are dropped.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '\n' || c == '\r' {
            push_trimmed(&mut out, &mut cur);
            continue;
        }
        cur.push(c);
        let next_is_space = chars.get(i + 1).is_none_or(|n| n.is_whitespace());
        if matches!(c, '.' | '!' | '?' | '…') && next_is_space {
            push_trimmed(&mut out, &mut cur);
        }
    }
    push_trimmed(&mut out, &mut cur);
    out
}

fn push_trimmed(out: &mut Vec<String>, cur: &mut String) {
    let t = cur.trim();
    if t.chars().any(|c| c.is_alphanumeric()) {
        out.push(t.to_string());
    }
    cur.clear();
}

/// A clause and the punctuation that ends it (`None` at the end of unpunctuated text).
fn clauses(sentence: &str) -> Vec<(String, Option<char>)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = sentence.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let next_is_space = chars.get(i + 1).is_none_or(|n| n.is_whitespace());
        if matches!(c, ',' | ';' | ':' | '.' | '!' | '?' | '…') && next_is_space {
            let p = if c == '…' { '.' } else { c };
            if cur.trim().chars().any(|c| c.is_alphanumeric()) {
                out.push((cur.trim().to_string(), Some(p)));
            }
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    if cur.trim().chars().any(|c| c.is_alphanumeric()) {
        out.push((cur.trim().to_string(), None));
    }
    out
}

/// espeak-ng processes started ahead of need, one per espeak voice: espeak-ng loads its voice
/// and dictionary (~10 ms) before it reads standard input, so a request that finds a waiting
/// process only pays for the text itself. Each process serves one request (text in, standard
/// input closed, phonemes out), so no request can ever read another's output. The next one is
/// started by [`prepare`] after the sentence's audio is made (the voice calls it), not while
/// the model runs: on two cores espeak-ng's start-up would slow the model by as much as it
/// saves. An idle one exits when Alicia does (its standard input closes).
static SPARES: Mutex<Vec<(String, Child)>> = Mutex::new(Vec::new());

fn spawn(voice: &str) -> Result<Child, TtsError> {
    Command::new("espeak-ng")
        .args(["-q", "--ipa", "-v", voice])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| TtsError::Espeak(format!("cannot run espeak-ng ({e}); install the espeak-ng package")))
}

fn take_spare(voice: &str) -> Option<Child> {
    let mut spares = SPARES.lock();
    let i = spares.iter().position(|(v, _)| v == voice)?;
    let (_, mut child) = spares.swap_remove(i);
    // One that died while waiting (killed, or the voice does not exist) is not used.
    match child.try_wait() {
        Ok(None) => Some(child),
        _ => None,
    }
}

/// Starts a waiting espeak-ng for `voice` (in the background) unless one is there.
pub fn prepare(voice: &str) {
    if SPARES.lock().iter().any(|(v, _)| v == voice) {
        return;
    }
    let voice = voice.to_string();
    std::thread::spawn(move || {
        if let Ok(child) = spawn(&voice) {
            let mut spares = SPARES.lock();
            if spares.iter().any(|(v, _)| *v == voice) {
                drop(spares);
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
            } else {
                spares.push((voice, child));
            }
        }
    });
}

/// Runs espeak-ng on `text` (standard input): one line of IPA per clause it found.
fn espeak(text: &str, voice: &str) -> Result<Vec<String>, TtsError> {
    let mut child = match take_spare(voice) {
        Some(c) => c,
        None => spawn(voice)?,
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).map_err(|e| TtsError::Espeak(format!("writing to espeak-ng: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| TtsError::Espeak(e.to_string()))?;
    if !out.status.success() {
        return Err(TtsError::Espeak(format!(
            "espeak-ng -v {voice} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
}

/// IPA for one sentence, with its clauses' punctuation: `həlˈoʊ ðˈɛɹ, hˈaʊ ɑːɹ juː?`.
pub fn phonemize(sentence: &str, espeak_voice: &str) -> Result<String, TtsError> {
    let mut clauses = clauses(sentence);
    if clauses.is_empty() {
        return Ok(String::new());
    }
    // Text that just stops ("Turned on the light", as assistants answer) is a statement: said
    // without a final `.` the voice trails off mid-word (tiny.en hears "Perned on the white"
    // every time, with the period "Turned on the light." every time). Piper's phonemizer
    // leaves it off; here it is added.
    if let Some(last) = clauses.last_mut() {
        last.1.get_or_insert('.');
    }
    // One espeak-ng run per sentence (~10 ms); its clause lines are matched to ours when the
    // counts agree, else joined and only the sentence's final punctuation is kept.
    let text: String =
        clauses.iter().map(|(c, p)| format!("{c}{} ", p.map(String::from).unwrap_or_default())).collect();
    let lines = espeak(text.trim(), espeak_voice)?;
    let mut out = String::new();
    if lines.len() == clauses.len() {
        for (line, (_, p)) in lines.iter().zip(&clauses) {
            out.push_str(line);
            if let Some(p) = p {
                out.push(*p);
            }
            out.push(' ');
        }
    } else {
        out = lines.join(" ");
        if let Some((_, Some(p))) = clauses.last() {
            out.push(*p);
        }
    }
    Ok(out.trim_end().to_string())
}

/// Piper's phoneme id map (`phoneme_id_map` of the voice's JSON), by code point.
#[derive(Debug, Clone)]
pub struct PhonemeIds {
    map: HashMap<char, Vec<i64>>,
    bos: Vec<i64>,
    eos: Vec<i64>,
    pad: Vec<i64>,
}

impl PhonemeIds {
    pub fn new(map: HashMap<String, Vec<i64>>) -> Result<Self, TtsError> {
        let mut by_char = HashMap::new();
        for (k, v) in map {
            let mut it = k.chars();
            if let (Some(c), None) = (it.next(), it.next()) {
                by_char.insert(c, v);
            }
        }
        let get =
            |c: char| by_char.get(&c).cloned().ok_or_else(|| TtsError::Voice(format!("phoneme_id_map has no `{c}`")));
        Ok(PhonemeIds { bos: get('^')?, eos: get('$')?, pad: get('_')?, map: by_char })
    }

    /// `^` and the pad `_`, then each phoneme (NFD-decomposed code points) followed by `_`,
    /// then `$`: Piper's own layout (piper-tts `phonemes_to_ids`, piper-phonemize), which its
    /// voices are trained on. Code points the voice does not know are skipped (returned, for
    /// the log).
    pub fn ids(&self, phonemes: &str) -> (Vec<i64>, Vec<char>) {
        let mut ids = self.bos.clone();
        ids.extend_from_slice(&self.pad);
        let mut unknown = Vec::new();
        for c in phonemes.nfd() {
            match self.map.get(&c) {
                Some(v) => {
                    ids.extend_from_slice(v);
                    ids.extend_from_slice(&self.pad);
                }
                None => unknown.push(c),
            }
        }
        ids.extend_from_slice(&self.eos);
        (ids, unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_and_clauses_split_on_punctuation_followed_by_space() {
        assert_eq!(
            sentences("Hello there, how are you? I am fine!  It costs 3.50 euros.\nNew line"),
            ["Hello there, how are you?", "I am fine!", "It costs 3.50 euros.", "New line"]
        );
        assert!(sentences("  ... \n ").is_empty());
        assert_eq!(
            clauses("Hello there, how are you?"),
            [("Hello there".to_string(), Some(',')), ("how are you".to_string(), Some('?'))]
        );
        assert_eq!(clauses("no punctuation"), [("no punctuation".to_string(), None)]);
    }

    #[test]
    fn ids_follow_pipers_layout() {
        let map: HashMap<String, Vec<i64>> = [("^", 1), ("$", 2), ("_", 0), ("a", 14), ("b", 15), ("\u{0303}", 141)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), vec![v]))
            .collect();
        let p = PhonemeIds::new(map).unwrap();
        assert_eq!(p.ids("ab").0, [1, 0, 14, 0, 15, 0, 2]);
        // NFD: "ã" is a + combining tilde; unknown code points are skipped and reported.
        let (ids, unknown) = p.ids("ãz");
        assert_eq!(ids, [1, 0, 14, 0, 141, 0, 2]);
        assert_eq!(unknown, ['z']);
    }
}
