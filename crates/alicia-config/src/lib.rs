//! Alicia's configuration: one model for every service, the per-environment files, and the
//! configuration service that changes it at run time.
//!
//! # Files and overrides
//!
//! [`load`]`(dir, env)` reads `<dir>/<env>.yaml` (`config/development.yaml`, `staging.yaml`,
//! `production.yaml` at the repository root) into [`Config`]: sections `mqtt`, `router`,
//! `registry`, `gateway`, `stt_service`, `tts_service`, `ai_service`, `security`, `monitoring`, `logging`.
//! Every key has a default, so a file names only what differs. Unknown keys are errors, and
//! every error names the file, line, column and key:
//!
//! ```text
//! config/production.yaml:4:3: mqtt: unknown field `hots`, expected one of `host`, `port`, ...
//! ```
//!
//! Then environment variables override single keys: `ALICIA__<SECTION>__<KEY>[__<SUBKEY>…]=value`
//! (double underscores, case-insensitive), with the value read as YAML (`5`, `true`, `[a, b]`,
//! text). Examples: `ALICIA__MQTT__PORT=1884`, `ALICIA__MONITORING__ALERTS__FIRE_AFTER_SECS=5`,
//! `ALICIA__MONITORING__EXPECTED_SERVICES=[router, device_registry]`. An unknown key or a wrong
//! type names the variable. Finally [`Config::validate`] checks ranges, addresses and regexes.
//!
//! Secrets are never in these files: they name files (`mqtt.password_file`, key files under
//! `security.home`), which stay mode 0600, so the configuration can be published on the bus.
//!
//! # The configuration service
//!
//! [`start`] runs `config_service` on the bus (an SDK service). Requests:
//!
//! | data | answer |
//! |------|--------|
//! | `{"op":"get"}` | `{"environment","version","updated","config"}` |
//! | `{"op":"get","section":"router"}` | `{"environment","version","section","values"}` |
//! | `{"op":"update","section":"router","values":{"max_hops":4}}` | `{"applied":true,"version","config"}` |
//! | `{"op":"update","key":"router.max_hops","value":4}` | same |
//! | either update with `"dry_run":true` | `{"applied":false,…}`: validated only |
//!
//! An update is validated in full first (the merged configuration must deserialize with no
//! unknown keys and pass [`Config::validate`]); a bad one is an error response with code
//! `invalid_config` listing the problems, and the configuration in force does not change. A
//! good one is written to `<state_dir>/config-<env>.json` (the persisted updates on top of the
//! file: temp file, fsync, rename, fsync of the directory, so a crash leaves the old or the new
//! state, never half of one), then put in force, then announced.
//!
//! The announcement is one retained JSON document per environment on
//! `<prefix>/system/config/<env>`: `{"environment","version","updated","config":{…}}`, sent at
//! every (re)connect of the service and after every applied update. Services follow their
//! section with [`ConfigWatch`] and reload without a restart. After a restart the service loads
//! the file again and puts the persisted updates back on top (an edit of the file shows through
//! wherever no update overrides it).
//!
//! # Why
//!
//! - **One model, typed, strict.** Every service reads the same struct, so a key means one
//!   thing; `deny_unknown_fields` turns the classic silent typo into an error with a line number.
//! - **Updates persisted as a delta**, not as a rewritten YAML file: the operator's file (and
//!   its comments) stays theirs, and what was changed at run time is visible in one small file.
//! - **One retained document** rather than a topic per section: configurations are small, a
//!   service that starts reads it at once (retained), and versions stay consistent across
//!   sections. [`ConfigWatch`] reports only changes of its own section.
//! - **Documents over a plain MQTT connection** (an [`alicia_sdk::Link`]): the announcement is a
//!   document for anyone (`mosquitto_sub -t 'alicia/system/config/#'`), not an envelope.

mod load;
mod model;
mod service;
mod watch;

use std::path::PathBuf;

pub use load::{apply_env, file_for, load, load_with, merge, parse, warnings, ConfigWarning, ENVIRONMENTS, ENV_PREFIX};
pub use model::*;
pub use service::{config_topic, start, ConfigServiceHandle, ConfigStore, Update, SERVICE_NAME};
pub use watch::ConfigWatch;

/// What can go wrong with configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", file.display())]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{}:{line}:{column}: {message}", file.display())]
    Parse { file: PathBuf, line: usize, column: usize, message: String },
    #[error("environment variable {var}: {message}")]
    Override { var: String, message: String },
    #[error("{source_name}: invalid configuration: {}", problems.join("; "))]
    Invalid { source_name: String, problems: Vec<String> },
    #[error("`{0}` is not an environment name (letters, digits, `-`, `_`)")]
    Environment(String),
    #[error("persisted configuration {}: {message}", file.display())]
    State { file: PathBuf, message: String },
    #[error("cannot persist the configuration to {}: {source}", file.display())]
    Persist { file: PathBuf, source: std::io::Error },
    #[error("bus: {0}")]
    Bus(String),
    #[error("{key}: {message}")]
    Secret { key: String, message: String },
    #[error("internal: {0}")]
    Internal(String),
}
