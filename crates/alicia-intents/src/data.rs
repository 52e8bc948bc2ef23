//! Home Assistant's compiled intents format, as data: what `home-assistant-intents` ships per
//! language (`home_assistant_intents/data/<lang>.json`) and what Alicia's own sentences use.
//!
//! Loading is separate from matching: [`IntentsData`] is parsed from bytes or a file, merged
//! with other files, and then compiled once into an [`crate::Engine`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a piece of intents data came from, so errors and results can name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Source(pub String);

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One intents file: Home Assistant's `<lang>.json`, or a file of extra sentences in the same
/// format. Every section is optional so a small extra file only says what it adds.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntentsFile {
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub intents: BTreeMap<String, IntentDef>,
    #[serde(default)]
    pub lists: BTreeMap<String, ListDef>,
    #[serde(default)]
    pub expansion_rules: BTreeMap<String, String>,
    #[serde(default)]
    pub skip_words: Vec<String>,
    #[serde(default)]
    pub responses: Responses,
}

/// An intent: blocks of sentences sharing slots, context requirements and a response.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntentDef {
    #[serde(default)]
    pub data: Vec<DataBlock>,
}

/// One `data` block of an intent.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataBlock {
    pub sentences: Vec<String>,
    /// Fixed slots added to every match (`domain: light`).
    #[serde(default)]
    pub slots: BTreeMap<String, Value>,
    /// Context the match must have: `area: {slot: true}` (copied into the `area` slot),
    /// `domain: [light, switch]` (the matched name's devices).
    #[serde(default)]
    pub requires_context: BTreeMap<String, Value>,
    #[serde(default)]
    pub excludes_context: BTreeMap<String, Value>,
    /// Key of the response template under `responses.intents.<intent>`; `default` if absent.
    #[serde(default)]
    pub response: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, Value>,
    /// Lists and rules local to this block.
    #[serde(default)]
    pub lists: BTreeMap<String, ListDef>,
    #[serde(default)]
    pub expansion_rules: BTreeMap<String, String>,
}

/// A slot list: text values, a number range, or a wildcard.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ListDef {
    Values { values: Vec<ListValueDef> },
    Range { range: RangeDef },
    Wildcard { wildcard: bool },
}

/// A value of a text list: a plain string (`in` = `out`), or `in` (a template such as
/// `(closed|shut)`) with its `out` value and optional context added when it matches.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ListValueDef {
    Text(String),
    Mapped {
        #[serde(rename = "in")]
        text_in: String,
        #[serde(rename = "out")]
        value_out: Value,
        #[serde(default)]
        context: BTreeMap<String, Value>,
        #[serde(default)]
        metadata: BTreeMap<String, Value>,
    },
}

/// A number range list. `to` is inclusive.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RangeDef {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub from: i64,
    pub to: i64,
    #[serde(default)]
    pub step: Option<i64>,
    /// `halves` or `tenths`.
    #[serde(default)]
    pub fractions: Option<String>,
    #[serde(default)]
    pub multiplier: Option<f64>,
    /// Digits accepted (default true).
    #[serde(default)]
    pub digits: Option<bool>,
    /// Number words accepted (default true).
    #[serde(default)]
    pub words: Option<bool>,
    #[serde(default)]
    pub words_language: Option<String>,
}

/// Response templates: error messages and, per intent, templates by key.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Responses {
    #[serde(default)]
    pub errors: BTreeMap<String, String>,
    #[serde(default)]
    pub intents: BTreeMap<String, BTreeMap<String, String>>,
}

/// Why intents data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{source_name}: cannot read: {error}")]
    Io { source_name: String, error: std::io::Error },
    #[error("{source_name}: not valid intents JSON at line {line}, column {column}: {error}")]
    Json { source_name: String, line: usize, column: usize, error: serde_json::Error },
    #[error("{source_name}: language {found:?} cannot be merged into {expected:?}")]
    Language { source_name: String, expected: String, found: String },
}

impl IntentsFile {
    /// Parses one file's bytes; `source_name` names it in errors (a path or "alicia-en").
    pub fn from_slice(bytes: &[u8], source_name: &str) -> Result<IntentsFile, LoadError> {
        serde_json::from_slice(bytes).map_err(|error| LoadError::Json {
            source_name: source_name.to_string(),
            line: error.line(),
            column: error.column(),
            error,
        })
    }

    /// Reads and parses a file.
    pub fn from_path(path: &Path) -> Result<IntentsFile, LoadError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|error| LoadError::Io { source_name: name.clone(), error })?;
        IntentsFile::from_slice(&bytes, &name)
    }
}

/// Intents data from one or more files, merged in order. Each data block remembers the file
/// it came from ([`Source`]), so a match says whose sentence it was.
#[derive(Debug, Clone, Default)]
pub struct IntentsData {
    pub language: String,
    /// Intents by name; each block with its source.
    pub intents: BTreeMap<String, Vec<(Source, DataBlock)>>,
    pub lists: BTreeMap<String, ListDef>,
    pub expansion_rules: BTreeMap<String, String>,
    pub skip_words: Vec<String>,
    pub responses: Responses,
}

impl IntentsData {
    /// Starts from one file (Home Assistant's, usually).
    pub fn new(file: IntentsFile, source: &str) -> IntentsData {
        let mut data = IntentsData { language: file.language.clone().unwrap_or_default(), ..Default::default() };
        // The language was just taken from this file, so merging cannot fail.
        let _ = data.merge(file, source);
        data
    }

    /// Parses HA's (or any) intents JSON from bytes.
    pub fn from_slice(bytes: &[u8], source: &str) -> Result<IntentsData, LoadError> {
        Ok(IntentsData::new(IntentsFile::from_slice(bytes, source)?, source))
    }

    /// Reads an intents JSON file.
    pub fn from_path(path: &Path) -> Result<IntentsData, LoadError> {
        let file = IntentsFile::from_path(path)?;
        Ok(IntentsData::new(file, &path.display().to_string()))
    }

    /// Merges another file in: its blocks are appended to the intents' blocks, its lists,
    /// rules and responses replace same-named ones, its skip words are added. A file that
    /// names a different language is refused (a file without `language` fits any).
    pub fn merge(&mut self, file: IntentsFile, source: &str) -> Result<(), LoadError> {
        if let Some(lang) = &file.language {
            if self.language.is_empty() {
                self.language = lang.clone();
            } else if !same_language(lang, &self.language) {
                return Err(LoadError::Language {
                    source_name: source.to_string(),
                    expected: self.language.clone(),
                    found: lang.clone(),
                });
            }
        }
        let src = Source(source.to_string());
        for (name, intent) in file.intents {
            let blocks = self.intents.entry(name).or_default();
            blocks.extend(intent.data.into_iter().map(|b| (src.clone(), b)));
        }
        self.lists.extend(file.lists);
        self.expansion_rules.extend(file.expansion_rules);
        for w in file.skip_words {
            if !self.skip_words.contains(&w) {
                self.skip_words.push(w);
            }
        }
        self.responses.errors.extend(file.responses.errors);
        for (intent, keys) in file.responses.intents {
            self.responses.intents.entry(intent).or_default().extend(keys);
        }
        Ok(())
    }

    /// Merges extra sentences given as JSON text (for instance a user's custom sentences).
    pub fn merge_str(&mut self, json: &str, source: &str) -> Result<(), LoadError> {
        let file = IntentsFile::from_slice(json.as_bytes(), source)?;
        self.merge(file, source)
    }

    /// Merges extra sentences from a file.
    pub fn merge_path(&mut self, path: &Path) -> Result<(), LoadError> {
        let file = IntentsFile::from_path(path)?;
        self.merge(file, &path.display().to_string())
    }
}

/// `en` fits `en-US` and the other way round: regional files extend the base language.
fn same_language(a: &str, b: &str) -> bool {
    let base = |s: &str| s.split(['-', '_']).next().unwrap_or(s).to_ascii_lowercase();
    base(a) == base(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_list_kind_and_merges_in_order() {
        let ha = r#"{
            "language": "en",
            "intents": {"HassTurnOn": {"data": [{"sentences": ["turn on {name}"], "response": "default"}]}},
            "lists": {
                "state": {"values": ["on", {"in": "(closed|shut)", "out": "off", "context": {"domain": "cover"}}]},
                "brightness": {"range": {"type": "percentage", "from": 0, "to": 100, "multiplier": -1}},
                "message": {"wildcard": true}
            },
            "expansion_rules": {"the": "(the|my)"},
            "skip_words": ["please"],
            "responses": {"errors": {"no_intent": "Sorry"}, "intents": {"HassTurnOn": {"default": "Turned on"}}}
        }"#;
        let mut data = IntentsData::from_slice(ha.as_bytes(), "ha-en").unwrap();
        assert_eq!(data.language, "en");
        assert!(matches!(data.lists["state"], ListDef::Values { ref values } if values.len() == 2));
        assert!(matches!(data.lists["brightness"], ListDef::Range { ref range } if range.multiplier == Some(-1.0)));
        assert!(matches!(data.lists["message"], ListDef::Wildcard { wildcard: true }));

        let extra = r#"{"language": "en-US", "intents": {"HassTurnOn": {"data": [{"sentences": ["power up {name}"]}]}},
                        "skip_words": ["please", "um"], "responses": {"intents": {"HassTurnOn": {"x": "y"}}}}"#;
        data.merge_str(extra, "alicia-en").unwrap();
        let blocks = &data.intents["HassTurnOn"];
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].0, Source("ha-en".into()));
        assert_eq!(blocks[1].0, Source("alicia-en".into()));
        assert_eq!(data.skip_words, ["please", "um"]);
        assert_eq!(data.responses.intents["HassTurnOn"].len(), 2);

        let err = data.merge_str(r#"{"language": "de"}"#, "german").unwrap_err();
        assert!(err.to_string().contains("german"), "{err}");
    }

    #[test]
    fn bad_json_names_the_source_and_line() {
        let err = IntentsData::from_slice(b"{\n  \"intents\": 5\n}", "custom.json").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("custom.json: not valid intents JSON at line 2"), "{text}");
    }
}
