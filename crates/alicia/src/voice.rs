//! The voice services under `alicia up` / `alicia services`: `stt_service`, `tts_service` and
//! the Wyoming bridge (`alicia-voice`), with the models of the environment's `stt_service` and
//! `tts_service` sections.
//!
//! The bus never waits for speech: the core services are up and `alicia ready` is printed
//! while the models are resolved in the background, fetched into the shared model store on
//! first start (with progress), and loaded. If that cannot be done (no network, a model name
//! that does not exist, a home without the services' logins), everything else runs, and each
//! voice service publishes a retained health document saying why and the one command that
//! fixes it (`P/system/services/<name>/health`), which the monitor shows as a critical alert
//! `service_unavailable` and in `/ready`. The models are looked for again every
//! [`RETRY`]: after `alicia models fetch …` the services start by themselves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alicia_config::Config;
use alicia_models::{FetchPolicy, ModelError, ModelStore, Progress};
use alicia_sdk::{Link, LinkOptions, QoS, ServiceConfig};
use alicia_stt::vad::VadConfig;
use alicia_stt::wake::{WakeDetector, WakeModels};
use alicia_voice::stt::{SttHandle, SttServiceConfig};
use alicia_voice::tts::{TtsHandle, TtsServiceConfig};
use alicia_voice::wyoming_bridge::{BridgeConfig, BridgeHandle};
use serde_json::json;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// How often models that were missing are looked for again.
pub const RETRY: Duration = Duration::from_secs(10);

/// Why a voice service is not running, and what fixes it.
#[derive(Debug, Clone)]
pub struct Unavailable {
    pub reason: String,
    pub fix: Option<String>,
    /// Looking again later may help (models missing), rather than a configuration error.
    pub retry: bool,
}

impl Unavailable {
    fn of(e: &ModelError, what: &str) -> Unavailable {
        let retry = matches!(
            e,
            ModelError::NotFetched { .. } | ModelError::AllSourcesFailed { .. } | ModelError::Corrupt { .. }
        );
        let fix = match e {
            ModelError::Unknown { available, .. } => Some(format!("set {what} to one of: {}", available.join(", "))),
            other => other.fix().map(str::to_string),
        };
        // The fix is said once, after the reason (and merged across services): not also
        // inside the reason, as the error's own text has it.
        let reason = match e {
            ModelError::NotFetched { id, dir, .. } => format!("model {id} is not in {}", dir.display()),
            other => other.to_string(),
        };
        Unavailable { reason, fix, retry }
    }
}

/// The running voice services (or the task still bringing them up).
#[derive(Default)]
pub struct Voice {
    started: std::sync::Arc<Mutex<(Option<SttHandle>, Option<TtsHandle>)>>,
    task: Option<JoinHandle<()>>,
    bridge: Option<BridgeHandle>,
}

/// What the voice services need from `up`.
pub struct VoiceSetup {
    pub stt: Option<ServiceConfig>,
    pub tts: Option<ServiceConfig>,
    /// The bridge's bus connection and addresses, when a Wyoming server is enabled.
    pub bridge: Option<(ServiceConfig, Option<std::net::SocketAddr>, Option<std::net::SocketAddr>, bool)>,
    pub cfg: Config,
    /// Where relative model paths are read from (the home).
    pub home: PathBuf,
    pub fetch: bool,
}

impl Voice {
    /// Starts the bridge now (it needs no model) and the services in the background.
    pub async fn start(setup: VoiceSetup) -> anyhow::Result<Voice> {
        let mut voice = Voice::default();
        if let Some((service, asr, tts, zeroconf)) = setup.bridge.clone() {
            let mut b = BridgeConfig::new(service);
            b.asr = asr;
            b.tts = tts;
            b.zeroconf = zeroconf.then(|| "alicia".to_string());
            let bridge = alicia_voice::wyoming_bridge::start(b).await?;
            if let Some(a) = bridge.asr_addr {
                crate::listening::announce("wyoming-asr", a);
            }
            if let Some(a) = bridge.tts_addr {
                crate::listening::announce("wyoming-tts", a);
            }
            voice.bridge = Some(bridge);
        }
        if setup.stt.is_none() && setup.tts.is_none() {
            return Ok(voice);
        }
        let started = voice.started.clone();
        voice.task = Some(tokio::spawn(bring_up(setup, started)));
        Ok(voice)
    }

    /// Stops what runs (a start still under way is abandoned).
    pub async fn stop(self) {
        if let Some(t) = self.task {
            t.abort();
        }
        let (stt, tts) = std::mem::take(&mut *self.started.lock().await);
        if let Some(b) = self.bridge {
            b.shutdown().await;
        }
        if let Some(s) = stt {
            s.shutdown().await;
        }
        if let Some(t) = tts {
            t.shutdown().await;
        }
    }
}

/// Resolves, loads and starts each service; what cannot start says why in its health
/// document, and is tried again while the reason is missing models.
async fn bring_up(setup: VoiceSetup, started: std::sync::Arc<Mutex<(Option<SttHandle>, Option<TtsHandle>)>>) {
    let mut stt_todo = setup.stt.clone();
    let mut tts_todo = setup.tts.clone();
    let mut policy = if setup.fetch { FetchPolicy::Fetch } else { FetchPolicy::Never };
    let mut reported: [Option<String>; 2] = [None, None];
    loop {
        let mut failed: [Option<Unavailable>; 2] = [None, None];
        if let Some(service) = stt_todo.clone() {
            match start_stt(&setup, service.clone(), policy).await {
                Ok(h) => {
                    health(&service, alicia_voice::stt::SERVICE_NAME, json!({"status": "ok"})).await;
                    started.lock().await.0 = Some(h);
                    stt_todo = None;
                }
                Err(u) => failed[0] = Some(u),
            }
        }
        if let Some(service) = tts_todo.clone() {
            match start_tts(&setup, service.clone(), policy).await {
                Ok(h) => {
                    health(&service, alicia_voice::tts::SERVICE_NAME, json!({"status": "ok"})).await;
                    started.lock().await.1 = Some(h);
                    tts_todo = None;
                }
                Err(u) => failed[1] = Some(u),
            }
        }
        // Both missing models: one command fetches what the whole voice needs, so each
        // service names that one (not two commands that each fix half).
        if let [Some(a), Some(b)] = &failed {
            let both = merge_fixes(vec![a.clone(), b.clone()]);
            if both.fix.as_deref().is_some_and(|f| f.starts_with("alicia models fetch ")) {
                let ids = dedup_words(both.fix.as_deref().unwrap_or_default());
                for u in failed.iter_mut().flatten() {
                    u.fix = Some(ids.clone());
                }
            }
        }
        for (i, (todo, name)) in
            [(&mut stt_todo, alicia_voice::stt::SERVICE_NAME), (&mut tts_todo, alicia_voice::tts::SERVICE_NAME)]
                .into_iter()
                .enumerate()
        {
            let (Some(u), Some(service)) = (failed[i].as_ref(), todo.clone()) else { continue };
            report(&service, name, u, &mut reported[i]).await;
            if !u.retry {
                *todo = None;
            }
        }
        if stt_todo.is_none() && tts_todo.is_none() {
            return;
        }
        // One fetch attempt per start; afterwards only look for what someone else fetched.
        policy = FetchPolicy::Never;
        tokio::time::sleep(RETRY).await;
    }
}

/// Logs the reason once (not on every retry) and publishes the health document.
async fn report(service: &ServiceConfig, name: &str, u: &Unavailable, last: &mut Option<String>) {
    if last.as_deref() != Some(u.reason.as_str()) {
        match &u.fix {
            Some(fix) => tracing::error!("{name} is unavailable: {}; to fix it: {fix}", u.reason),
            None => tracing::error!("{name} is unavailable: {}", u.reason),
        }
        *last = Some(u.reason.clone());
        health(service, name, json!({"status": "unavailable", "service": name, "reason": u.reason, "fix": u.fix}))
            .await;
    }
}

/// Publishes `doc` (retained) on the service's health topic, with its own login.
async fn health(service: &ServiceConfig, name: &str, doc: serde_json::Value) {
    let topic = alicia_voice::VoiceTopics::new(service.topic_prefix.clone()).health(name);
    let id = format!("{name}-health-{}", &alicia_envelope::Uuid::new_v4().simple().to_string()[..8]);
    let (link, _events) = Link::connect(service, LinkOptions::new(id, []).with_label(format!("{name}/health")));
    let sent = async {
        link.wait_online(Duration::from_secs(10)).await?;
        link.publish(topic, QoS::AtLeastOnce, true, serde_json::to_vec(&doc).expect("JSON"), None).await
    }
    .await;
    if let Err(e) = sent {
        tracing::warn!(service = name, error = %e, "cannot publish the health document");
    }
    link.close().await;
}

/// A configured model: a path to a file, if there is one, else a name for the manifest.
fn configured_file(home: &Path, value: &str) -> Option<PathBuf> {
    let p = Path::new(value);
    let p = if p.is_absolute() { p.to_path_buf() } else { home.join(p) };
    let looks_like_path = value.contains('/') || value.ends_with(".bin") || value.ends_with(".onnx");
    (looks_like_path && p.is_file()).then_some(p).or_else(|| Path::new(value).is_file().then(|| PathBuf::from(value)))
}

fn store() -> Result<ModelStore, Unavailable> {
    ModelStore::locate(None, None).map_err(|e| Unavailable::of(&e, "ALICIA_MODELS"))
}

fn progress() -> Progress {
    Progress::Auto
}

fn onnx(store: &ModelStore, policy: FetchPolicy) -> Result<(), Unavailable> {
    let lib =
        alicia_models::onnxruntime(store, policy, progress()).map_err(|e| Unavailable::of(&e, "ORT_DYLIB_PATH"))?;
    alicia_onnx::init(&lib).map_err(|e| Unavailable { reason: e.to_string(), fix: None, retry: false })?;
    Ok(())
}

/// openWakeWord's models from the store (`alicia up`'s `stt_service.wake_word`, `alicia wyoming
/// --wake`: `what` names which in the errors), loaded once here so that a model that does not
/// load is said at start, not to the first stream. ONNX Runtime must be loaded.
pub(crate) fn wake_models(
    store: &ModelStore,
    policy: FetchPolicy,
    progress: Progress,
    threshold: f32,
    what: &str,
) -> Result<WakeModels, Unavailable> {
    let p = alicia_models::openwakeword(store, policy, progress).map_err(|e| Unavailable::of(&e, what))?;
    let broken = |reason: String| Unavailable {
        reason: format!("{what}: {reason}"),
        fix: Some("alicia models fetch openwakeword".into()),
        retry: false,
    };
    let m = WakeModels::from_files(&p.files, alicia_models::WAKE_WORDS)
        .ok_or_else(|| broken("openwakeword: files missing".into()))?;
    WakeDetector::new(&m, &[], threshold).map_err(|e| broken(e.to_string()))?;
    Ok(m)
}

/// `alicia models fetch a b a c` → `alicia models fetch a b c`.
fn dedup_words(command: &str) -> String {
    let ids = command.strip_prefix("alicia models fetch ").unwrap_or(command);
    let mut seen: Vec<&str> = Vec::new();
    for id in ids.split_whitespace() {
        if !seen.contains(&id) {
            seen.push(id);
        }
    }
    format!("alicia models fetch {}", seen.join(" "))
}

/// Collects every missing model's id into one `alicia models fetch` command.
fn merge_fixes(errors: Vec<Unavailable>) -> Unavailable {
    let ids: Vec<String> = errors
        .iter()
        .filter_map(|u| u.fix.as_deref()?.strip_prefix("alicia models fetch ").map(str::to_string))
        .collect();
    let reason = errors.iter().map(|u| u.reason.clone()).collect::<Vec<_>>().join("; ");
    let retry = errors.iter().all(|u| u.retry);
    let fix = if ids.len() == errors.len() {
        Some(format!("alicia models fetch {}", ids.join(" ")))
    } else {
        errors.iter().find_map(|u| u.fix.clone())
    };
    Unavailable { reason, fix, retry }
}

async fn start_stt(setup: &VoiceSetup, service: ServiceConfig, policy: FetchPolicy) -> Result<SttHandle, Unavailable> {
    let s = setup.cfg.stt_service.clone();
    let home = setup.home.clone();
    let (engine, model_name, vad, wake) = tokio::task::spawn_blocking(move || {
        let store = store()?;
        let mut missing = Vec::new();
        let (model, name) = match configured_file(&home, &s.whisper.model) {
            Some(p) => {
                let name = p.file_stem().map(|n| n.to_string_lossy().trim_start_matches("ggml-").to_string());
                (Some(p), name.unwrap_or_default())
            }
            None => match alicia_models::whisper(&store, &s.whisper.model, policy, progress()) {
                Ok(r) => {
                    if let Some(note) = &r.resolved.note {
                        tracing::warn!("stt_service.whisper.model: {note}");
                    }
                    (Some(r.paths.main().to_path_buf()), r.resolved.spec.name.to_string())
                }
                Err(e) => {
                    missing.push(Unavailable::of(&e, "stt_service.whisper.model"));
                    (None, String::new())
                }
            },
        };
        // Silero VAD ends a satellite's utterance when speech ends; it needs ONNX Runtime.
        if let Err(u) = onnx(&store, policy) {
            missing.push(u);
        }
        let vad = match alicia_models::silero_vad(&store, policy, progress()) {
            Ok(p) => Some(p),
            Err(e) => {
                missing.push(Unavailable::of(&e, "silero-vad"));
                None
            }
        };
        // openWakeWord, asked for (its pre-trained models are for non-commercial use).
        let wake = match s.wake_word.enabled {
            false => None,
            true => {
                tracing::info!(
                    "stt_service.wake_word: openWakeWord's alexa and hey_mycroft (models licensed CC BY-NC-SA 4.0: non-commercial use only)"
                );
                match wake_models(&store, policy, progress(), s.wake_word.threshold as f32, "stt_service.wake_word") {
                    Ok(m) => Some(m),
                    Err(u) => {
                        missing.push(u);
                        None
                    }
                }
            }
        };
        if !missing.is_empty() {
            return Err(merge_fixes(missing));
        }
        let mut c = alicia_stt::SttConfig::new(model.expect("resolved above"));
        c.workers = s.performance.max_concurrent.max(1);
        c.queue = s.performance.queue;
        c.max_audio_seconds = s.performance.max_audio_length.max(1) as f32;
        c.language = Some(s.whisper.language.clone());
        let engine = alicia_stt::SttEngine::new(c).map_err(|e| Unavailable {
            reason: e.to_string(),
            fix: None,
            retry: false,
        })?;
        Ok((engine, name, vad, wake))
    })
    .await
    .map_err(|e| Unavailable { reason: format!("loading failed: {e}"), fix: None, retry: false })??;
    let mut c = SttServiceConfig::new(service, engine, model_name);
    c.vad = vad.map(|p| (p, VadConfig::default()));
    c.wake = wake.map(|m| (m, setup.cfg.stt_service.wake_word.threshold as f32));
    c.timeout = Duration::from_secs(setup.cfg.stt_service.performance.timeout.max(1));
    alicia_voice::stt::start(c).await.map_err(|e| Unavailable { reason: e.to_string(), fix: None, retry: false })
}

async fn start_tts(setup: &VoiceSetup, service: ServiceConfig, policy: FetchPolicy) -> Result<TtsHandle, Unavailable> {
    let t = setup.cfg.tts_service.clone();
    let home = setup.home.clone();
    let engine = tokio::task::spawn_blocking(move || {
        let store = store()?;
        let mut missing = Vec::new();
        if let Err(u) = onnx(&store, policy) {
            missing.push(u);
        }
        let voice = match configured_file(&home, &t.piper.voice) {
            Some(p) => Some((p, None)),
            None => match alicia_models::piper_voice(&store, &t.piper.voice, policy, progress()) {
                Ok(r) => {
                    if let Some(note) = &r.resolved.note {
                        tracing::warn!("tts_service.piper.voice: {note}");
                    }
                    Some((r.paths.main().to_path_buf(), Some(r.resolved)))
                }
                Err(e) => {
                    missing.push(Unavailable::of(&e, "tts_service.piper.voice"));
                    None
                }
            },
        };
        if !missing.is_empty() {
            return Err(merge_fixes(missing));
        }
        let (path, resolved) = voice.expect("resolved above");
        let cfg = alicia_tts::TtsConfig {
            cache_entries: t.performance.cache_size,
            sessions_per_voice: t.performance.max_concurrent.max(1),
            ..alicia_tts::TtsConfig::default()
        };
        let fail = |e: alicia_tts::TtsError| Unavailable { reason: e.to_string(), fix: None, retry: false };
        let mut engine = alicia_tts::TtsEngine::new(&[path], cfg).map_err(fail)?;
        if let Some(r) = resolved.filter(|r| r.note.is_some()) {
            engine.alias(&r.requested, r.spec.name).map_err(fail)?;
        }
        Ok(engine)
    })
    .await
    .map_err(|e| Unavailable { reason: format!("loading failed: {e}"), fix: None, retry: false })??;
    let mut c = TtsServiceConfig::new(service, engine);
    c.timeout = Duration::from_secs(setup.cfg.tts_service.performance.timeout.max(1));
    alicia_voice::tts::start(c).await.map_err(|e| Unavailable { reason: e.to_string(), fix: None, retry: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_command_fetches_what_both_services_miss() {
        let u = |fix: &str| Unavailable { reason: fix.into(), fix: Some(fix.into()), retry: true };
        let both = merge_fixes(vec![
            u("alicia models fetch whisper-tiny.en onnxruntime"),
            u("alicia models fetch onnxruntime piper-x"),
        ]);
        assert_eq!(
            dedup_words(both.fix.as_deref().unwrap()),
            "alicia models fetch whisper-tiny.en onnxruntime piper-x"
        );
        assert!(both.retry);
        let other =
            merge_fixes(vec![u("set stt_service.whisper.model to one of: tiny.en"), u("alicia models fetch x")]);
        assert_eq!(other.fix.as_deref(), Some("set stt_service.whisper.model to one of: tiny.en"));
    }
}
