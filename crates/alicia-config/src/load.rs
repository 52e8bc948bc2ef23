//! Reading `config/<env>.yaml`, environment variable overrides, and JSON merging.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{Config, ConfigError};

/// Prefix of override variables: `ALICIA__MQTT__PORT=1884` sets `mqtt.port`;
/// `ALICIA__MONITORING__ALERTS__FIRE_AFTER_SECS=5` sets `monitoring.alerts.fire_after_secs`.
pub const ENV_PREFIX: &str = "ALICIA__";

/// The environments that have a file.
pub const ENVIRONMENTS: &[&str] = &["development", "staging", "production"];

/// Loads `<dir>/<env>.yaml` and applies the `ALICIA__…` variables of this process.
pub fn load(dir: &Path, env: &str) -> Result<Config, ConfigError> {
    load_with(dir, env, std::env::vars())
}

/// [`load`] with explicit variables (tests, or a launcher that filtered them).
pub fn load_with(
    dir: &Path,
    env: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let file = file_for(dir, env)?;
    let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
    let config = parse(&file, &text)?;
    for w in warnings(&file, &text, &config) {
        tracing::warn!("{w}");
    }
    let config = apply_env(config, vars)?;
    config.validate().map_err(|problems| ConfigError::Invalid { source_name: file.display().to_string(), problems })?;
    Ok(config)
}

/// `<dir>/<env>.yaml`, after checking that `env` is a plain name.
pub fn file_for(dir: &Path, env: &str) -> Result<PathBuf, ConfigError> {
    if env.is_empty() || !env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(ConfigError::Environment(env.to_string()));
    }
    Ok(dir.join(format!("{env}.yaml")))
}

/// Parses YAML text; errors carry the file, line, column and the key path serde reports.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    serde_yaml_ng::from_str::<Config>(text).map_err(|e| {
        let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
        let mut message = e.to_string();
        // serde_yaml_ng appends " at line L column C"; the location is reported separately.
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        ConfigError::Parse { file: file.to_path_buf(), line, column, message }
    })
}

/// Something in a configuration file that works but should change: the file, line and key, and
/// what to do. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub file: PathBuf,
    /// 1-based; 0 when the key's line could not be found.
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}: {}", self.file.display(), self.line, self.key, self.message)
    }
}

/// What in `config` (parsed from `text` in `file`) works but should change: a plain
/// `mqtt.password` (the design document writes one), `security.certificate_validation: false`
/// (which Alicia does not honour).
pub fn warnings(file: &Path, text: &str, config: &Config) -> Vec<ConfigWarning> {
    let mut out = Vec::new();
    let mut warn = |path: &[&str], message: &str| {
        out.push(ConfigWarning {
            file: file.to_path_buf(),
            line: locate(text, path).unwrap_or(0),
            key: path.join("."),
            message: message.to_string(),
        })
    };
    if config.mqtt.password.is_some() {
        warn(
            &["mqtt", "password"],
            "a password written in the configuration file: it works, but anyone who can read the file \
             (or a copy of it) has it; put it in a file of its own (mode 0600) and name that file with \
             `mqtt.password_file`",
        );
    }
    if !config.security.certificate_validation {
        warn(
            &["security", "certificate_validation"],
            "ignored: Alicia always validates certificates (chain, validity, revocation)",
        );
    }
    out
}

/// The line (1-based) of the key `path` in a YAML mapping of block style, followed by
/// indentation. Good enough to point a person at a key; `None` if not found.
fn locate(text: &str, path: &[&str]) -> Option<usize> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(" #").next().unwrap_or(raw);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some((key, _)) = trimmed.split_once(':') else { continue };
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
        while stack.last().is_some_and(|(d, _)| *d >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
        if stack.len() == path.len() && stack.iter().zip(path).all(|((_, k), p)| k == p) {
            return Some(i + 1);
        }
    }
    None
}

/// Applies `ALICIA__SECTION__KEY=value` variables. Values are read as YAML scalars or flow
/// collections (`5`, `true`, `[a, b]`, `text`); an unknown key or a wrong type names the variable.
pub fn apply_env(config: Config, vars: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
    let mut vars: Vec<(String, String)> = vars.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    if vars.is_empty() {
        return Ok(config);
    }
    vars.sort();
    let password = config.mqtt.password.clone();
    let mut json = serde_json::to_value(&config).map_err(|e| ConfigError::Internal(e.to_string()))?;
    for (var, raw) in &vars {
        let path: Vec<String> = var[ENV_PREFIX.len()..].split("__").map(|s| s.to_ascii_lowercase()).collect();
        let bad = |message: String| ConfigError::Override { var: var.clone(), message };
        if path.iter().any(|p| p.is_empty()) {
            return Err(bad("empty key segment".into()));
        }
        let value: Value = if raw.is_empty() {
            Value::Null
        } else {
            let yaml: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(raw).unwrap_or(serde_yaml_ng::Value::String(raw.clone()));
            serde_json::to_value(yaml).map_err(|e| bad(e.to_string()))?
        };
        set_path(&mut json, &path, value, true).map_err(bad)?;
        // Check each variable on its own, so the error names the one at fault.
        serde_json::from_value::<Config>(json.clone()).map_err(|e| bad(e.to_string()))?;
    }
    let mut config: Config = serde_json::from_value(json).map_err(|e| ConfigError::Internal(e.to_string()))?;
    // Never serialised, so not in `json`: put back.
    config.mqtt.password = password;
    Ok(config)
}

/// Sets `path` in `root`. With `must_exist`, every segment must name an existing key (so a
/// typo is an error); the last one may also be a key that is absent because it is optional.
pub(crate) fn set_path(root: &mut Value, path: &[String], value: Value, must_exist: bool) -> Result<(), String> {
    let mut node = root;
    for (i, seg) in path.iter().enumerate() {
        let Value::Object(map) = node else {
            return Err(format!("`{}` is not a section", path[..i].join(".")));
        };
        if i + 1 == path.len() {
            if must_exist && !map.contains_key(seg) {
                return Err(format!("unknown key `{}`", path.join(".")));
            }
            map.insert(seg.clone(), value);
            return Ok(());
        }
        if !map.contains_key(seg) {
            if must_exist {
                return Err(format!("unknown key `{}`", path[..=i].join(".")));
            }
            map.insert(seg.clone(), Value::Object(Map::new()));
        }
        node = map.get_mut(seg).expect("just checked");
    }
    Err("empty key".into())
}

/// Deep merge: objects merge key by key; anything else in `over` replaces what is in `base`.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}
