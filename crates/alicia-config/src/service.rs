//! The configuration service: the effective configuration (file + environment + persisted
//! updates), get/update over the bus, atomic persistence, and the retained announcement.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alicia_envelope::Envelope;
use alicia_sdk::{BusService, Context, HandlerResult, QoS, ServiceConfig, ServiceError, ServiceHandle};
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::load::{merge, set_path};
use crate::{Config, ConfigError, SECTIONS};
use alicia_sdk::{Link, LinkEvent, LinkOptions};

/// The SDK name of the configuration service.
pub const SERVICE_NAME: &str = "config_service";

/// The retained topic carrying the effective configuration of `env`.
pub fn config_topic(prefix: &str, env: &str) -> String {
    format!("{prefix}/system/config/{env}")
}

/// A change: a section (deep-merged into it) or one key (`section.key[.sub…]`, replaced).
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Section { section: String, values: Value },
    Key { key: String, value: Value },
}

impl Update {
    /// From a request's data: `{"section": "router", "values": {...}}` or
    /// `{"key": "router.max_hops", "value": 4}`.
    pub fn from_request(data: &Value) -> Result<Update, String> {
        match (data.get("section"), data.get("values"), data.get("key"), data.get("value")) {
            (Some(Value::String(s)), Some(v @ Value::Object(_)), None, None) => {
                Ok(Update::Section { section: s.clone(), values: v.clone() })
            }
            (None, None, Some(Value::String(k)), Some(v)) => Ok(Update::Key { key: k.clone(), value: v.clone() }),
            _ => {
                Err("an update needs either `section` (text) with `values` (object), or `key` (text) with `value`"
                    .into())
            }
        }
    }
}

/// The configuration as loaded from its file, plus the persisted updates on top.
pub struct ConfigStore {
    env: String,
    /// The file's `mqtt.password`, which JSON never carries.
    password: Option<crate::PlainPassword>,
    base: Value,
    overrides: Value,
    current: Config,
    version: u64,
    updated: String,
    state_file: PathBuf,
}

impl ConfigStore {
    /// Loads `<dir>/<env>.yaml` (with the process's `ALICIA__` variables) and the persisted
    /// updates in `<state_dir>/config-<env>.json`, if any.
    pub fn open(dir: &Path, env: &str, state_dir: &Path) -> Result<ConfigStore, ConfigError> {
        let base = crate::load(dir, env)?;
        ConfigStore::with_base(base, env, state_dir)
    }

    /// A store on an already loaded configuration.
    pub fn with_base(base: Config, env: &str, state_dir: &Path) -> Result<ConfigStore, ConfigError> {
        crate::load::file_for(Path::new("."), env)?;
        let state_file = state_dir.join(format!("config-{env}.json"));
        // The file's plain password (if any) is never serialised: keep it aside, and put it
        // back on every configuration made from JSON.
        let password = base.mqtt.password.clone();
        let base = serde_json::to_value(&base).map_err(|e| ConfigError::Internal(e.to_string()))?;
        let mut current: Config =
            serde_json::from_value(base.clone()).map_err(|e| ConfigError::Internal(e.to_string()))?;
        current.mqtt.password = password.clone();
        let mut store = ConfigStore {
            env: env.to_string(),
            current,
            password,
            base,
            overrides: Value::Object(Map::new()),
            version: 0,
            updated: now(),
            state_file,
        };
        match std::fs::read(&store.state_file) {
            Ok(bytes) => {
                let bad = |message: String| ConfigError::State { file: store.state_file.clone(), message };
                let state: Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
                let overrides = state.get("overrides").cloned().unwrap_or(Value::Object(Map::new()));
                let current = store.effective(&overrides).map_err(|e| bad(e.to_string()))?;
                store.version = state.get("version").and_then(Value::as_u64).unwrap_or(0);
                if let Some(u) = state.get("updated").and_then(Value::as_str) {
                    store.updated = u.to_string();
                }
                store.overrides = overrides;
                store.current = current;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ConfigError::Read { file: store.state_file.clone(), source }),
        }
        Ok(store)
    }

    /// The configuration in force.
    pub fn current(&self) -> &Config {
        &self.current
    }

    /// The environment name.
    pub fn environment(&self) -> &str {
        &self.env
    }

    /// Increases with every applied update (persisted).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Where updates are persisted.
    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    /// The retained document: `{"environment", "version", "updated", "config"}`.
    pub fn document(&self) -> Value {
        json!({
            "environment": self.env,
            "version": self.version,
            "updated": self.updated,
            "config": self.current,
        })
    }

    fn effective(&self, overrides: &Value) -> Result<Config, ConfigError> {
        let mut json = self.base.clone();
        merge(&mut json, overrides);
        let mut config: Config = serde_json::from_value(json)
            .map_err(|e| ConfigError::Invalid { source_name: "update".into(), problems: vec![e.to_string()] })?;
        config.mqtt.password = self.password.clone();
        config.validate().map_err(|problems| ConfigError::Invalid { source_name: "update".into(), problems })?;
        Ok(config)
    }

    /// Dry run: the configuration `update` would give, or why it is refused.
    pub fn check(&self, update: &Update) -> Result<(Config, Value), ConfigError> {
        let refused = |m: String| ConfigError::Invalid { source_name: "update".into(), problems: vec![m] };
        let mut overrides = self.overrides.clone();
        match update {
            Update::Section { section, values } => {
                if !SECTIONS.contains(&section.as_str()) {
                    return Err(refused(format!("unknown section `{section}`")));
                }
                let mut slot = overrides.get(section).cloned().unwrap_or(Value::Object(Map::new()));
                merge(&mut slot, values);
                set_path(&mut overrides, std::slice::from_ref(section), slot, false).map_err(refused)?;
            }
            Update::Key { key, value } => {
                let path: Vec<String> = key.split('.').map(str::to_string).collect();
                if path.iter().any(String::is_empty) || !SECTIONS.contains(&path[0].as_str()) || path.len() < 2 {
                    return Err(refused(format!("`{key}` is not `section.key`")));
                }
                // The key must exist in the full configuration (optional keys are present as null).
                let mut probe = serde_json::to_value(&self.current).map_err(|e| refused(e.to_string()))?;
                set_path(&mut probe, &path, value.clone(), true).map_err(refused)?;
                set_path(&mut overrides, &path, value.clone(), false).map_err(refused)?;
            }
        }
        let what = match update {
            Update::Section { section, .. } => section,
            Update::Key { key, .. } => key,
        };
        let config = self.effective(&overrides).map_err(|e| match e {
            ConfigError::Invalid { problems, .. } => {
                ConfigError::Invalid { source_name: format!("update of `{what}`"), problems }
            }
            e => e,
        })?;
        Ok((config, overrides))
    }

    /// Validates, persists (temp file, fsync, rename, fsync of the directory) and then puts the
    /// update in force. On any error nothing changes.
    pub fn apply(&mut self, update: &Update) -> Result<&Config, ConfigError> {
        let (config, overrides) = self.check(update)?;
        let version = self.version + 1;
        let updated = now();
        let state = json!({ "environment": self.env, "version": version, "updated": updated, "overrides": overrides });
        write_atomic(&self.state_file, &serde_json::to_vec_pretty(&state).expect("JSON values serialize"))
            .map_err(|source| ConfigError::Persist { file: self.state_file.clone(), source })?;
        self.overrides = overrides;
        self.current = config;
        self.version = version;
        self.updated = updated;
        Ok(&self.current)
    }
}

/// The state file holds the configuration, which may name secrets: owner-only.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    alicia_home::write_file(path, bytes, alicia_home::Access::Secret).map_err(|e| e.source)
}

pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

struct Shared {
    /// tokio's Mutex: the guard is held across `announce(..).await`, so updates are announced in order.
    store: Mutex<ConfigStore>,
    link: Link,
    topic: String,
}

impl Shared {
    async fn announce(&self, store: &ConfigStore) {
        let doc = serde_json::to_vec(&store.document()).expect("JSON values serialize");
        if let Err(e) = self.link.publish(self.topic.clone(), QoS::AtLeastOnce, true, doc, None).await {
            tracing::debug!(error = %e, topic = %self.topic, "configuration not announced");
        }
    }
}

/// The bus side of [`ConfigStore`].
///
/// Requests (data of a `request` envelope to `config_service`):
/// - `{"op": "get"}` → `{"environment", "version", "updated", "config"}`;
///   `{"op": "get", "section": "mqtt"}` → `{"environment", "version", "section", "values"}`.
/// - `{"op": "update", "section": S, "values": {...}}` or `{"op": "update", "key": "S.k", "value": v}`,
///   optional `"dry_run": true` → `{"applied", "version", "config"}`; a refused update is an
///   error response with code `invalid_config` and every problem in the message.
struct ConfigBusService {
    shared: Arc<Shared>,
}

impl BusService for ConfigBusService {
    fn name(&self) -> &str {
        SERVICE_NAME
    }

    async fn handle(&self, _ctx: &Context, envelope: Envelope) -> HandlerResult {
        let data = &envelope.payload.data;
        let op = data.get("op").and_then(Value::as_str).unwrap_or("get");
        match op {
            "get" => {
                let store = self.shared.store.lock().await;
                match data.get("section") {
                    None | Some(Value::Null) => Ok(Some(store.document())),
                    Some(Value::String(s)) => match store.current().section(s) {
                        Some(values) => Ok(Some(json!({
                            "environment": store.environment(), "version": store.version(), "section": s, "values": values,
                        }))),
                        None => Err(ServiceError::new("unknown_section", format!("no section `{s}`")).into()),
                    },
                    Some(_) => Err(ServiceError::new("invalid_request", "`section` must be text").into()),
                }
            }
            "update" => {
                let update = Update::from_request(data).map_err(|m| ServiceError::new("invalid_request", m))?;
                let dry_run = data.get("dry_run").and_then(Value::as_bool).unwrap_or(false);
                let mut store = self.shared.store.lock().await;
                if dry_run {
                    let (config, _) = store.check(&update).map_err(refused)?;
                    return Ok(Some(json!({ "applied": false, "version": store.version(), "config": config })));
                }
                match store.apply(&update) {
                    Ok(_) => {
                        tracing::info!(version = store.version(), ?update, "configuration updated");
                        self.shared.announce(&store).await;
                        Ok(Some(json!({ "applied": true, "version": store.version(), "config": store.current() })))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "configuration update refused; the last good configuration stays");
                        Err(refused(e).into())
                    }
                }
            }
            other => Err(ServiceError::new("invalid_request", format!("unknown op `{other}` (get, update)")).into()),
        }
    }
}

fn refused(e: ConfigError) -> ServiceError {
    ServiceError::new("invalid_config", e.to_string())
}

/// A running configuration service.
pub struct ConfigServiceHandle {
    service: ServiceHandle,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl ConfigServiceHandle {
    /// The configuration in force now.
    pub async fn current(&self) -> Config {
        self.shared.store.lock().await.current().clone()
    }

    /// The SDK handle (bus, state).
    pub fn service(&self) -> &ServiceHandle {
        &self.service
    }

    /// Leaves the bus (status `offline`) and closes the document connection.
    pub async fn shutdown(self) {
        self.task.abort();
        self.service.shutdown().await;
        self.shared.link.close().await;
    }
}

/// Starts the configuration service on the bus described by `sdk` (its name is forced to
/// [`SERVICE_NAME`] unless `sdk.name` is set), announcing `store`'s configuration retained on
/// [`config_topic`] at every (re)connect and after every applied update.
pub fn start(sdk: ServiceConfig, store: ConfigStore) -> Result<ConfigServiceHandle, ConfigError> {
    let topic = config_topic(&sdk.topic_prefix, store.environment());
    let name = sdk.name.clone().unwrap_or_else(|| SERVICE_NAME.to_string());
    let id = format!(
        "{name}-docs-{:08x}",
        std::process::id() ^ (std::time::UNIX_EPOCH.elapsed().unwrap_or_default().subsec_nanos())
    );
    let (link, mut events) = Link::connect(&sdk, LinkOptions::new(id, []).with_label("config_service/docs"));
    let shared = Arc::new(Shared { store: Mutex::new(store), link, topic });
    let service = alicia_sdk::start(sdk, ConfigBusService { shared: shared.clone() })
        .map_err(|e| ConfigError::Bus(e.to_string()))?;
    let s = shared.clone();
    let task = tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let LinkEvent::Online = ev {
                let store = s.store.lock().await;
                s.announce(&store).await;
            }
        }
    });
    Ok(ConfigServiceHandle { service, shared, task })
}
