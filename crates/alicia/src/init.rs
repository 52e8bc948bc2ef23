//! `alicia init`: a ready, secure configuration with no secret in the code or on the screen.
//!
//! The home directory gets: `certs/` (a CA, the broker's server certificate), `passwd` (one
//! random password per core service, Mosquitto format) with each service's password in
//! `secrets/<service>.password`, an `acl` (services on `alicia/#`, each device only under its
//! own id), an empty certificate revocation list (`certs/crl.pem`, `alicia certs revoke`), a
//! JWT signing key, a first message encryption key and an Ed25519 envelope signing key pair per
//! core service (`keys/signing/<service>.key`, `.pub`) in `keys/`, and
//! `config/{development,staging,production}.yaml` (the services' environments) and
//! `alicia.yaml` tying it together. Every secret file is mode 0600; nothing secret is printed
//! or logged. `alicia up` runs this on first start.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ring::rand::{SecureRandom, SystemRandom};

use crate::certs::write_secret;
use alicia_home::Home;

/// The core services that get broker credentials and an envelope signing key. Each name is
/// both the MQTT user name and the service's name on the bus (its envelopes' `source`, which
/// is also the id of its signing key). `cli` is for the command-line tools (`alicia devices`).
pub const SERVICES: &[&str] = &[
    "router",
    "device_registry",
    "config_service",
    "monitor",
    "gateway",
    "api",
    "cli",
    ASSISTANT,
    "speaker_manager",
    "sensor_data",
    "actuator_control",
    "data_store",
    "ha_bridge",
    STT,
    TTS,
    WYOMING,
    PIPELINE,
];

/// The voice services (`alicia-voice`): only the topics they use (see [`VOICE_ACL`]), not the
/// whole bus. `wyoming` is the bridge that serves Home Assistant's Wyoming clients from them.
const STT: &str = "stt_service";
const TTS: &str = "tts_service";
const WYOMING: &str = "wyoming";
const PIPELINE: &str = "voice_pipeline";
const VOICE: &[&str] = &[STT, TTS, WYOMING, PIPELINE];

/// The voice services' rights: the design document's ACL lines for `stt_service` and
/// `tts_service` first, then what each needs besides: its inbox, replies, presence and health,
/// the satellites' topics it reads or writes, and what a capability provider sends (its
/// registration and heartbeats, which the patterns below let every login write, dead
/// letters, refusals to devices). Responses go to requesters' inboxes and reply topics, which
/// the patterns let every login write to.
const VOICE_ACL: &str = "\
# Voice services: only their own topics.
user stt_service
# The design document's:
topic readwrite alicia/voice/stt/#
topic read alicia/voice/command/#
# Satellites' microphones in, transcripts and refusals out.
topic read alicia/voice/sat/+/mic
topic write alicia/voice/sat/+/snd
topic readwrite alicia/services/stt_service/#
topic readwrite alicia/system/services/stt_service/#
topic read alicia/system/discovery/rebirth
topic write alicia/system/deadletter
topic write alicia/devices/+/errors

user tts_service
# The design document's:
topic readwrite alicia/voice/tts/#
topic read alicia/voice/ai/response
# Satellites' `synthesize` in, speech out.
topic read alicia/voice/sat/+/mic
topic write alicia/voice/sat/+/snd
topic readwrite alicia/services/tts_service/#
topic readwrite alicia/system/services/tts_service/#
topic read alicia/system/discovery/rebirth
topic write alicia/system/deadletter
topic write alicia/devices/+/errors

user voice_pipeline
# Sessions: what stt_service heard and tts_service said in, requests to the assistant out
# (inboxes: the patterns below), cancels and arbitration to satellites, events.
topic read alicia/voice/stt/response
topic read alicia/voice/stt/events
topic read alicia/voice/tts/events
topic write alicia/voice/tts/cancel
topic write alicia/voice/ai/response
topic write alicia/voice/events
topic write alicia/voice/sat/+/snd
topic readwrite alicia/services/voice_pipeline/#
topic readwrite alicia/system/services/voice_pipeline/#
topic write alicia/system/discovery/heartbeat
topic write alicia/system/deadletter

user wyoming
# Each Home Assistant connection is a satellite of its own (wyoming_<bridge>_<n>).
topic write alicia/voice/sat/+/mic
topic read alicia/voice/sat/+/snd
topic readwrite alicia/services/wyoming/#

";

/// The assistant, a voice service: only the topics it uses (see [`ASSISTANT_ACL`]), not the
/// whole bus.
const ASSISTANT: &str = "ai_service";

/// The assistant's rights: the design document's ACL for `ai_service` (its voice topics, the
/// transcripts), and what it needs besides. Commands go to the router's inbox, which the
/// patterns below let every login write to, as they let it answer on reply topics.
const ASSISTANT_ACL: &str = "\
user ai_service
# The design document's: the assistant's voice topics, and the transcripts.
topic readwrite alicia/voice/ai/#
topic read alicia/voice/stt/response
# Its inbox, replies and presence; heartbeats and dead letters.
topic readwrite alicia/services/ai_service/#
topic readwrite alicia/system/services/ai_service/status
topic write alicia/system/discovery/heartbeat
topic write alicia/system/deadletter
# What it understands by: the inventory, devices' states and readings.
topic read alicia/system/registry/devices
topic read alicia/devices/+/state
topic read alicia/devices/+/telemetry
# What it says: voice events, announcements for every speaker, refusals to devices.
topic write alicia/voice/events
topic write alicia/devices/speakers/announce
topic write alicia/devices/+/errors

";

/// The MQTT user of Home Assistant's MQTT integration.
pub const HOME_ASSISTANT: &str = "homeassistant";

/// Exactly what Home Assistant needs on Alicia's broker for the bridge's entities: its
/// discovery prefix (configs, its birth and will), the devices' states and availability,
/// sensor_data's latest readings, the lights' HA-format states, and the bridge's command
/// topics; and denied what the ACL's patterns give every other login. Devices adopted from
/// other software keep their own topics: add those by hand.
const HOME_ASSISTANT_ACL: &str = "# Home Assistant (secrets/homeassistant.password): the ha_bridge's entities only.\n\
     user homeassistant\n\
     topic readwrite homeassistant/#\n\
     topic read alicia/devices/+/state\n\
     topic read alicia/devices/+/status\n\
     topic read alicia/sensors/+\n\
     topic read alicia/ha/+/light/state\n\
     topic write alicia/ha/+/+/set\n\
     topic write alicia/ha/+/+/press\n\
     # Not what the patterns below give every login: no service inboxes or replies, no\n\
     # registrations, no broadcasts, no device of its own (a user's deny beats a pattern).\n\
     topic deny alicia/services/#\n\
     topic deny alicia/system/#\n\
     topic deny alicia/broadcast/#\n\
     topic deny alicia/devices/homeassistant/#\n\n";

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf).map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The listener ports `init` writes into `alicia.yaml`.
#[derive(Clone, Copy)]
pub struct Ports {
    /// Plain MQTT on loopback, for services on this machine (password login).
    pub mqtt: u16,
    /// MQTT over TLS with client certificates, for devices.
    pub mqtts: u16,
}

/// Creates a configuration in `home`. Refuses to touch an existing one.
pub fn init(home: &Path, hosts: &[String], ports: Ports) -> anyhow::Result<PathBuf> {
    let h = Home::new(home);
    let config = h.config_file();
    if config.exists() {
        bail!("{} exists: refusing to overwrite a configuration", config.display());
    }
    // secrets/, keys/, keys/signing/, data/ owner-only; certs/ and config/ readable.
    h.create_dirs().with_context(|| format!("cannot create {}", home.display()))?;
    let certs = h.certs_dir();
    if !h.ca_cert().exists() {
        crate::certs::create_ca(&certs)?;
    }
    crate::certs::issue_server(&certs, hosts)?;
    crate::certs::ensure_crl(&certs)?;

    let passwd = h.passwd();
    for service in SERVICES {
        let password = random_hex(24)?;
        alicia_broker::auth::set_user(&passwd, service, &password)?;
        write_secret(&h.password_file(service), password.as_bytes())?;
    }
    // Home Assistant's MQTT integration logs in as `homeassistant` (not a bus service: no
    // signing key, and only the topics in HOME_ASSISTANT_ACL).
    let password = random_hex(24)?;
    alicia_broker::auth::set_user(&passwd, HOME_ASSISTANT, &password)?;
    write_secret(&h.password_file(HOME_ASSISTANT), password.as_bytes())?;
    write_secret(&h.jwt_key(), random_hex(64)?.as_bytes())?;
    write_secret(&h.encryption_key(1), random_hex(32)?.as_bytes())?;
    // One Ed25519 key pair per core service, for signing envelopes (alicia_seal's docs say how
    // the files are shared with services on other machines).
    for service in SERVICES {
        alicia_gateway::signing::SigningKey::generate(&h.signing_key(service), &h.verifying_key(service))
            .map_err(|e| anyhow::anyhow!("signing key for {service}: {e}"))?;
    }

    let mut acl = String::from(
        "# Written by `alicia init`. Mosquitto acl_file format.\n\
         # Core services: the whole bus, and the broker's statistics.\n",
    );
    for service in SERVICES.iter().filter(|s| **s != ASSISTANT && !VOICE.contains(s)) {
        acl.push_str(&format!("user {service}\ntopic readwrite alicia/#\ntopic read $SYS/#\n"));
        if *service == "ha_bridge" {
            // It speaks for devices adopted from HA discovery, which chose their own topics.
            acl.push_str("topic readwrite #\n");
        }
        acl.push('\n');
    }
    acl.push_str(ASSISTANT_ACL);
    acl.push_str(VOICE_ACL);
    acl.push_str(HOME_ASSISTANT_ACL);
    acl.push_str(
        "# Devices log in with a client certificate whose CN is their id (%u) or a gateway token:\n\
         # each may only use its own topics, announce itself, hear broadcasts and rebirth\n\
         # requests, send envelopes to services (the router resolves device_id: and capability:)\n\
         # and answer requests on their reply topics. Envelope signatures say who really sent what.\n\
         pattern readwrite alicia/devices/%u/#\n\
         pattern write alicia/system/discovery/register\n\
         pattern write alicia/system/discovery/heartbeat\n\
         pattern write alicia/system/discovery/unregister\n\
         pattern read alicia/system/discovery/rebirth\n\
         pattern write alicia/services/+/inbox\n\
         pattern write alicia/services/+/reply/+\n\
         # ... and hear the answers to their own requests on their own reply topics.\n\
         pattern read alicia/services/%u/reply/#\n\
         pattern read alicia/broadcast/#\n\
         # Satellites (a microphone and a speaker) stream on their own voice topics only.\n\
         pattern readwrite alicia/voice/sat/%u/#\n",
    );
    crate::certs::write_public(&h.acl(), acl.as_bytes())?;
    // The environments of the services (`alicia up --env`), not secret.
    crate::up::write_environment_files(&h.environments_dir())?;

    crate::certs::write_public(
        &config,
        format!(
            "# Written by `alicia init`. Paths are relative to this file.\n\
             broker:\n\
             \x20 allow_anonymous: false\n\
             \x20 password_file: passwd\n\
             \x20 acl_file: acl\n\
             \x20 # Every message carries its publisher's login (alicia-user, alicia-auth), so\n\
             \x20 # services know who sent it and a device can speak only as itself.\n\
             \x20 identity_properties: true\n\
             \x20 persistence: {{ location: data }}\n\
             \x20 listeners:\n\
             \x20   # Services on this machine log in with the passwords in secrets/.\n\
             \x20   - {{ port: {mqtt}, address: 127.0.0.1 }}\n\
             \x20   # Devices: TLS, with a certificate from `alicia certs device ID` or a gateway token.\n\
             \x20   - port: {mqtts}\n\
             \x20     tls:\n\
             \x20       cafile: certs/ca.crt\n\
             \x20       certfile: certs/server.crt\n\
             \x20       keyfile: certs/server.key\n\
             \x20       crlfile: certs/crl.pem\n\
             \x20       require_certificate: false\n\
             \x20       use_identity_as_username: true\n\
             # The security gateway (HTTP API, and HTTPS with client certificates).\n\
             gateway:\n\
             \x20 max_requests_per_minute: 60\n\
             \x20 cafile: certs/ca.crt\n\
             \x20 crlfile: certs/crl.pem\n\
             \x20 certfile: certs/server.crt\n\
             \x20 keyfile: certs/server.key\n",
            mqtt = ports.mqtt,
            mqtts = ports.mqtts,
        )
        .as_bytes(),
    )?;
    Ok(config)
}

/// Where Alicia keeps its configuration: `$ALICIA_HOME`, else `$XDG_CONFIG_HOME/alicia`, else
/// `~/.config/alicia`.
pub fn default_home() -> PathBuf {
    Home::default_location().root().to_path_buf()
}
