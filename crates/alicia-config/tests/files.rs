//! The configuration files at the repository root load, and bad input names file, line and key.

use std::path::{Path, PathBuf};

use alicia_config::{load_with, ConfigError, Severity};

fn repo_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

fn no_vars() -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn every_environment_file_loads_and_validates() {
    for env in alicia_config::ENVIRONMENTS {
        let c = load_with(&repo_config(), env, no_vars()).unwrap_or_else(|e| panic!("{env}: {e}"));
        assert!(!c.monitoring.expected_services.is_empty(), "{env}");
        assert!(c.monitoring.log_rules.iter().any(|r| r.severity == Severity::Critical), "{env}: default rules");
    }
    let prod = load_with(&repo_config(), "production", no_vars()).unwrap();
    assert!(prod.mqtt.tls.enabled);
    assert_eq!(prod.mqtt.password_file.as_deref(), Some(Path::new("/etc/alicia/secrets/mqtt-password")));
    let dev = load_with(&repo_config(), "development", no_vars()).unwrap();
    assert_eq!(dev.logging.format, "text");
    assert_eq!(dev.monitoring.alerts.fire_after_secs, 5.0);
}

fn write(dir: &Path, env: &str, text: &str) {
    std::fs::write(dir.join(format!("{env}.yaml")), text).unwrap();
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "test", "mqtt:\n  host: broker\n  hots: typo\n");
    let err = load_with(dir.path(), "test", no_vars()).unwrap_err();
    let ConfigError::Parse { file, line, message, .. } = &err else { panic!("{err:?}") };
    assert!(file.ends_with("test.yaml"));
    assert_eq!(*line, 3, "{err}");
    assert!(message.contains("mqtt") && message.contains("hots"), "{message}");
    let text = err.to_string();
    assert!(text.contains("test.yaml:3:"), "{text}");
}

#[test]
fn wrong_type_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "test", "router:\n  max_hops: 8\nregistry:\n  http_port: lots\n");
    let err = load_with(dir.path(), "test", no_vars()).unwrap_err();
    let ConfigError::Parse { line, message, .. } = &err else { panic!("{err:?}") };
    assert_eq!(*line, 4, "{err}");
    assert!(message.contains("registry.http_port"), "{message}");
}

#[test]
fn semantic_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "test",
        "monitoring:\n  log_rules:\n    - {name: x, pattern: 'a(', severity: warning, message: m}\n",
    );
    let err = load_with(dir.path(), "test", no_vars()).unwrap_err();
    assert!(err.to_string().contains("monitoring.log_rules[0].pattern"), "{err}");
    assert!(err.to_string().contains("test.yaml"), "{err}");
}

#[test]
fn missing_file_and_bad_env_name() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(load_with(dir.path(), "nope", no_vars()), Err(ConfigError::Read { .. })));
    assert!(matches!(load_with(dir.path(), "../etc", no_vars()), Err(ConfigError::Environment(_))));
}

#[test]
fn environment_variables_override_keys() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "test", "mqtt:\n  port: 1883\n");
    let vars = vec![
        ("ALICIA__MQTT__PORT".to_string(), "1884".to_string()),
        ("ALICIA__MQTT__USERNAME".to_string(), "svc".to_string()),
        ("ALICIA__MONITORING__ALERTS__FIRE_AFTER_SECS".to_string(), "2.5".to_string()),
        ("ALICIA__MONITORING__EXPECTED_SERVICES".to_string(), "[router, tts_service]".to_string()),
        ("ALICIA_HOME".to_string(), "/ignored".to_string()),
    ];
    let c = load_with(dir.path(), "test", vars).unwrap();
    assert_eq!(c.mqtt.port, 1884);
    assert_eq!(c.mqtt.username.as_deref(), Some("svc"));
    assert_eq!(c.monitoring.alerts.fire_after_secs, 2.5);
    assert_eq!(c.monitoring.expected_services, ["router", "tts_service"]);

    let err = load_with(dir.path(), "test", vec![("ALICIA__MQTT__PROT".into(), "1".into())]).unwrap_err();
    assert!(matches!(&err, ConfigError::Override { var, .. } if var == "ALICIA__MQTT__PROT"), "{err}");
    let err = load_with(dir.path(), "test", vec![("ALICIA__MQTT__PORT".into(), "many".into())]).unwrap_err();
    assert!(matches!(&err, ConfigError::Override { var, .. } if var == "ALICIA__MQTT__PORT"), "{err}");
    let err = load_with(dir.path(), "test", vec![("ALICIA__MQTT__PORT".into(), "0".into())]).unwrap_err();
    assert!(err.to_string().contains("mqtt.port"), "{err}");
}

#[test]
fn sdk_settings_read_the_password_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("mqtt-password");
    std::fs::write(&secret, "s3cret-from-file\n").unwrap();
    write(
        dir.path(),
        "test",
        &format!("mqtt:\n  host: broker.lan\n  port: 1884\n  username: svc\n  password_file: {}\n", secret.display()),
    );
    let c = load_with(dir.path(), "test", no_vars()).unwrap();
    let sdk = c.sdk_config().unwrap();
    assert_eq!((sdk.host.as_str(), sdk.port, sdk.username.as_deref()), ("broker.lan", 1884, Some("svc")));
    assert_eq!(sdk.password.as_ref().unwrap().expose(), "s3cret-from-file");
    // The configuration (what the service publishes) holds the path, never the secret.
    assert!(!serde_json::to_string(&c).unwrap().contains("s3cret"));
    std::fs::remove_file(&secret).unwrap();
    let err = c.sdk_config().unwrap_err();
    assert!(err.to_string().contains("mqtt.password_file"), "{err}");
}

#[test]
fn bad_metric_labels_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "test", "monitoring:\n  labels:\n    site: home\n    bad-name: x\n");
    let err = load_with(dir.path(), "test", no_vars()).unwrap_err();
    assert!(err.to_string().contains("monitoring.labels.bad-name"), "{err}");
}

fn design_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/design")
}

/// The design document's `config/development.yaml` and `config/production.yaml`, as written,
/// load onto Alicia's model; the plain passwords they contain are accepted with a warning
/// naming the line, and never serialised (so never published or logged).
#[test]
fn the_design_documents_environment_files_load_as_written() {
    let dev = load_with(&design_dir(), "development", no_vars()).unwrap();
    assert_eq!((dev.mqtt.host.as_str(), dev.mqtt.port), ("localhost", 1883));
    assert_eq!(dev.mqtt.username.as_deref(), Some("dev_user"));
    assert_eq!(dev.mqtt.password.as_ref().map(|p| p.expose()), Some("dev_password"));
    assert!(!dev.mqtt.tls.enabled);
    assert_eq!((dev.stt_service.whisper.model.as_str(), dev.stt_service.whisper.language.as_str()), ("base", "en"));
    assert_eq!((dev.stt_service.performance.max_audio_length, dev.stt_service.performance.timeout), (30, 10));
    assert_eq!(dev.tts_service.piper.voice, "en_US-lessac-medium");
    assert_eq!(dev.tts_service.piper.quality, "medium");
    assert_eq!((dev.tts_service.performance.cache_size, dev.tts_service.performance.timeout), (100, 15));
    assert!(!dev.security.encrypt_payloads && !dev.security.certificate_validation && !dev.security.rate_limiting);

    let prod = load_with(&design_dir(), "production", no_vars()).unwrap();
    assert_eq!((prod.mqtt.host.as_str(), prod.mqtt.port, prod.mqtt.tls.enabled), ("alicia_bus_core", 8883, true));
    assert_eq!(prod.stt_service.whisper.model, "large");
    assert_eq!(prod.tts_service.piper.quality, "high");
    assert_eq!(prod.tts_service.performance.cache_size, 1000);
    assert!(prod.security.encrypt_payloads && prod.security.certificate_validation && prod.security.rate_limiting);
    assert_eq!(prod.security.max_requests_per_minute, Some(100));

    // Warnings name the file and line; the password itself appears nowhere.
    let text = std::fs::read_to_string(design_dir().join("development.yaml")).unwrap();
    let warnings = alicia_config::warnings(&design_dir().join("development.yaml"), &text, &dev);
    let shown: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 2, "{shown:?}");
    assert!(shown[0].contains("development.yaml:6: mqtt.password: a password written"), "{shown:?}");
    assert!(shown[0].contains("mqtt.password_file"), "{shown:?}");
    assert!(shown[1].contains("development.yaml:26: security.certificate_validation: ignored"), "{shown:?}");
    for w in &shown {
        assert!(!w.contains("dev_password"), "{w}");
    }
    let json = serde_json::to_string(&dev).unwrap();
    assert!(!json.contains("dev_password") && !format!("{dev:?}").contains("dev_password"));
    // An override round trip keeps the password (it is put back, not serialised).
    let vars = vec![("ALICIA__MQTT__PORT".to_string(), "1884".to_string())];
    let over = load_with(&design_dir(), "development", vars).unwrap();
    assert_eq!((over.mqtt.port, over.mqtt.password.as_ref().map(|p| p.expose())), (1884, Some("dev_password")));
}

#[test]
fn tls_is_a_switch_or_a_section() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a", "mqtt:\n  tls: true\n");
    let a = load_with(dir.path(), "a", no_vars()).unwrap();
    assert!(a.mqtt.tls.enabled && a.mqtt.tls.ca_file.is_none(), "the home's CA is the default");
    write(dir.path(), "b", "mqtt:\n  tls:\n    enabled: true\n    ca_file: /x/ca.crt\n");
    assert!(load_with(dir.path(), "b", no_vars()).unwrap().mqtt.tls.enabled);
    write(dir.path(), "c", "mqtt:\n  tls:\n    enabeld: true\n");
    let err = load_with(dir.path(), "c", no_vars()).unwrap_err().to_string();
    assert!(err.contains("c.yaml:3") && err.contains("enabeld"), "{err}");
}
