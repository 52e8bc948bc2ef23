//! The gateway through its public interfaces: certificates made here with rcgen, key files in
//! temporary directories, and HTTP over a real socket.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use alicia_gateway::crypto::{KeyRing, Sealed};
use alicia_gateway::device_auth::{DeviceAuthError, DeviceAuthority};
use alicia_gateway::http::Gateway;
use alicia_gateway::signing::{canonical_bytes, SignatureError, SigningKey, VerifyingKey};
use alicia_gateway::tokens::{TokenError, TokenIssuer};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rcgen::SigningKey as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use serde_json::{json, Value};
use time::OffsetDateTime;

// ---------------------------------------------------------------- certificates

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(365);
    let pem = p.self_signed(&key).unwrap().pem();
    Ca { pem, issuer: Issuer::new(p, key) }
}

/// A client certificate for `cn` valid from `from` to `to` days relative to now.
fn device(ca: &Ca, cn: &str, serial: u64, from: i64, to: i64) -> String {
    device_with_key(ca, cn, serial, from, to).0
}

fn device_with_key(ca: &Ca, cn: &str, serial: u64, from: i64, to: i64) -> (String, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.serial_number = Some(SerialNumber::from(serial));
    let now = OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(from);
    p.not_after = now + time::Duration::days(to);
    (p.signed_by(&key, &ca.issuer).unwrap().pem(), key)
}

fn crl(ca: &Ca, revoked: &[u64]) -> String {
    let now = OffsetDateTime::now_utc();
    let params = CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(7),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|&s| RevokedCertParams {
                serial_number: SerialNumber::from(s),
                revocation_time: now - time::Duration::minutes(5),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params.signed_by(&ca.issuer).unwrap().pem().unwrap()
}

#[test]
fn device_certificates() {
    let home = ca("home CA");
    let other = ca("other CA");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), &home.pem).unwrap();
    std::fs::write(dir.path().join("crl.pem"), crl(&home, &[7])).unwrap();
    let auth = DeviceAuthority::load(&dir.path().join("ca.crt"), Some(&dir.path().join("crl.pem"))).unwrap();

    let id = auth.verify_pem(&device(&home, "kitchen-speaker", 5, -1, 30)).unwrap();
    assert_eq!(id.device_id, "kitchen-speaker");
    assert_eq!(id.serial, "05");

    assert_eq!(auth.verify_pem(&device(&other, "kitchen-speaker", 5, -1, 30)), Err(DeviceAuthError::WrongCa));
    assert_eq!(auth.verify_pem(&device(&home, "old", 6, -30, -1)), Err(DeviceAuthError::Expired));
    assert_eq!(auth.verify_pem(&device(&home, "future", 8, 2, 30)), Err(DeviceAuthError::NotYetValid));
    assert_eq!(auth.verify_pem(&device(&home, "stolen", 7, -1, 30)), Err(DeviceAuthError::Revoked));
    assert!(matches!(auth.verify_pem("hello"), Err(DeviceAuthError::Malformed(_))));
    let garbage = "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n";
    assert!(matches!(auth.verify_pem(garbage), Err(DeviceAuthError::Malformed(_))));
    assert!(matches!(auth.verify_pem(&device(&home, "a/b", 9, -1, 30)), Err(DeviceAuthError::Malformed(_))));
    // Each reason is distinct and readable.
    assert_eq!(DeviceAuthError::Revoked.reason(), "certificate has been revoked");

    // Without a CRL file (path absent) nothing is revoked.
    let no_crl = DeviceAuthority::load(&dir.path().join("ca.crt"), Some(&dir.path().join("none.pem"))).unwrap();
    assert!(no_crl.verify_pem(&device(&home, "stolen", 7, -1, 30)).is_ok());
}

// ---------------------------------------------------------------- tokens

fn write_hex_key(path: &Path, bytes: &[u8]) {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(path, hex + "\n").unwrap();
}

#[test]
fn tokens() {
    let dir = tempfile::tempdir().unwrap();
    write_hex_key(&dir.path().join("jwt.key"), &[0x5a; 64]);
    let issuer = TokenIssuer::from_key_file(&dir.path().join("jwt.key")).unwrap();
    assert_eq!(issuer.lifetime(), Duration::from_secs(900));

    let token = issuer.issue("kitchen-speaker");
    let claims = issuer.verify_password_jwt("kitchen-speaker", token.as_bytes()).unwrap();
    assert_eq!(claims.sub, "kitchen-speaker");
    assert_eq!(claims.exp - claims.iat, 900);
    assert_eq!(issuer.verify_password_jwt("hallway", token.as_bytes()), Err(TokenError::Subject));

    let other = TokenIssuer::new(&[0x5b; 64]).unwrap();
    assert_eq!(other.verify(&token), Err(TokenError::Signature));

    let short = TokenIssuer::new(&[0x5a; 64]).unwrap().with_lifetime(Duration::from_secs(60));
    let old = short.issue_at("kitchen-speaker", 1_000_000);
    assert_eq!(short.verify_at(&old, 1_000_000 + 60 + 31), Err(TokenError::Expired));
    assert!(short.verify_at(&old, 1_000_000 + 59).is_ok());
    assert_eq!(short.verify_at(&old, 1_000_000 - 3600), Err(TokenError::NotYetValid));
    assert_eq!(issuer.verify(&short.issue_at("x", 1_000_000)), Err(TokenError::Expired));

    let wrong_aud = TokenIssuer::new(&[0x5a; 64]).unwrap().with_audience("elsewhere").issue("x");
    assert!(matches!(issuer.verify(&wrong_aud), Err(TokenError::Audience(_))));
    let wrong_iss = TokenIssuer::new(&[0x5a; 64]).unwrap().with_issuer("mallory").issue("x");
    assert!(matches!(issuer.verify(&wrong_iss), Err(TokenError::Issuer(_))));

    // alg "none" and other algorithms are refused before anything else.
    let parts: Vec<&str> = token.split('.').collect();
    let none =
        format!("{}.{}.", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), parts[1]);
    assert_eq!(issuer.verify(&none), Err(TokenError::Algorithm));
    assert!(matches!(issuer.verify("a.b"), Err(TokenError::Malformed(_))));
    assert!(matches!(issuer.verify_password_jwt("x", &[0xff, 0xfe]), Err(TokenError::Malformed(_))));

    // Tampered claims: the subject changed, the MAC no longer matches.
    let forged_claims = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
        .unwrap()
        .replace("kitchen-speaker", "front-door-lock");
    let forged =
        format!("{}.{}.{}", parts[0], base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged_claims), parts[2]);
    assert_eq!(issuer.verify(&forged), Err(TokenError::Signature));

    assert!(matches!(TokenIssuer::new(b"secret"), Err(TokenError::Key(_))));
    std::fs::write(dir.path().join("bad.key"), "not hex").unwrap();
    assert!(matches!(TokenIssuer::from_key_file(&dir.path().join("bad.key")), Err(TokenError::Key(_))));
}

// ---------------------------------------------------------------- encryption

#[test]
fn encryption_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    write_hex_key(&dir.path().join("enc-1.key"), &[1; 32]);
    std::fs::write(dir.path().join("jwt.key"), "00").unwrap(); // other files are ignored
    let mut ring = KeyRing::load(dir.path()).unwrap();
    assert_eq!(ring.key_ids(), ["enc-1"]);

    let a = ring.encrypt(b"turn on the lights").unwrap();
    let b = ring.encrypt(b"turn on the lights").unwrap();
    assert_eq!(a.key_id, "enc-1");
    assert_ne!(a.ciphertext, b.ciphertext, "nonces are random");
    assert_eq!(ring.decrypt(&a).unwrap(), b"turn on the lights");
    assert_eq!(STANDARD.decode(&a.ciphertext).unwrap().len(), 12 + 18 + 16);

    // Every flipped byte (nonce, body, tag) is detected.
    let raw = STANDARD.decode(&a.ciphertext).unwrap();
    for i in 0..raw.len() {
        let mut t = raw.clone();
        t[i] ^= 0x01;
        let sealed = Sealed { key_id: a.key_id.clone(), ciphertext: STANDARD.encode(t) };
        assert_eq!(ring.decrypt(&sealed), Err(alicia_gateway::crypto::CryptoError::Tampered), "byte {i}");
    }
    assert!(ring.decrypt(&Sealed { key_id: "enc-1".into(), ciphertext: "AAAA".into() }).is_err());
    assert!(ring.decrypt(&Sealed { key_id: "enc-9".into(), ..a.clone() }).is_err());

    // Rotation: new messages use the new key, old ones still decrypt.
    let id = ring.rotate(dir.path()).unwrap();
    assert_eq!(id, "enc-2");
    let mode = std::fs::metadata(dir.path().join("enc-2.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let c = ring.encrypt(b"new").unwrap();
    assert_eq!(c.key_id, "enc-2");
    assert_eq!(ring.decrypt(&a).unwrap(), b"turn on the lights");
    // Relabelling a ciphertext with another key id is tampering.
    assert!(ring.decrypt(&Sealed { key_id: "enc-2".into(), ..a.clone() }).is_err());

    // A reloaded ring sees both keys.
    let reloaded = KeyRing::load(dir.path()).unwrap();
    assert_eq!(reloaded.decrypt(&a).unwrap(), b"turn on the lights");
    assert_eq!(reloaded.decrypt(&c).unwrap(), b"new");

    // The current key cannot be retired; an old one can, after which its ciphertexts fail.
    assert!(ring.retire(dir.path(), "enc-2").is_err());
    ring.retire(dir.path(), "enc-1").unwrap();
    assert!(matches!(ring.decrypt(&a), Err(alicia_gateway::crypto::CryptoError::UnknownKey(_))));
    assert_eq!(ring.decrypt(&c).unwrap(), b"new");
    assert!(KeyRing::load(dir.path()).unwrap().decrypt(&a).is_err());
    // Numbers are never reused, even after retirement.
    assert_eq!(ring.rotate(dir.path()).unwrap(), "enc-3");
}

// ---------------------------------------------------------------- signatures

#[test]
fn signatures() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = (dir.path().join("signing.key"), dir.path().join("signing.pub"));
    let key = SigningKey::generate(&private, &public).unwrap();
    assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(SigningKey::generate(&private, &public).is_err(), "never overwrites a key");
    let key2 = SigningKey::load(&private).unwrap();
    let verifier = VerifyingKey::load(&public).unwrap();
    assert_eq!(key2.verifying_key(), verifier);

    let mut env = json!({
        "id": "5c9c6a30-9d3e-4d8e-9d4a-0a4b7e0f3c11",
        "source": "alicia/services/stt",
        "destination": "alicia/services/nlu",
        "payload": {"type": "transcript", "data": {"text": "allume la lumière", "confidence": 0.93}},
        "routing": {"hops": 0, "max_hops": 8}
    });
    key.sign_in_place(&mut env).unwrap();
    assert!(env["security"]["signature"].is_string());
    verifier.verify(&env).unwrap();

    // Key order and whitespace do not matter; the reordered text verifies too.
    let text = serde_json::to_string_pretty(&env).unwrap();
    let reparsed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(canonical_bytes(&reparsed), canonical_bytes(&env));
    let reordered = json!({
        "routing": {"max_hops": 8, "hops": 0},
        "payload": env["payload"].clone(),
        "destination": env["destination"].clone(),
        "security": env["security"].clone(),
        "source": env["source"].clone(),
        "id": env["id"].clone()
    });
    verifier.verify(&reordered).unwrap();

    let mut tampered = env.clone();
    tampered["payload"]["data"]["text"] = json!("ouvre la porte");
    assert_eq!(verifier.verify(&tampered), Err(SignatureError::Mismatch));
    let mut added = env.clone();
    added["security"]["key_id"] = json!("enc-1");
    assert_eq!(
        verifier.verify(&added),
        Err(SignatureError::Mismatch),
        "security fields other than signature are signed"
    );

    let other = SigningKey::generate(&dir.path().join("o.key"), &dir.path().join("o.pub")).unwrap();
    assert_eq!(other.verifying_key().verify(&env), Err(SignatureError::Mismatch));

    let mut unsigned = env.clone();
    unsigned["security"].as_object_mut().unwrap().remove("signature");
    assert_eq!(verifier.verify(&unsigned), Err(SignatureError::Missing));
    let mut garbled = env.clone();
    garbled["security"]["signature"] = json!("!!");
    assert_eq!(verifier.verify(&garbled), Err(SignatureError::Malformed));
    assert_eq!(key.sign_in_place(&mut json!([1])), Err(SignatureError::NotAnObject));
}

// ---------------------------------------------------------------- HTTP

struct Reply {
    status: u16,
    headers: String,
    body: Value,
}

/// One HTTP/1.1 request over a fresh connection.
fn post(addr: SocketAddr, path: &str, body: &Value, bearer: Option<&str>) -> Reply {
    let body = body.to_string();
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply { status, headers: head.to_ascii_lowercase(), body: serde_json::from_str(body).unwrap_or(Value::Null) }
}

fn start(gateway: Gateway) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            alicia_gateway::http::serve(listener, Arc::new(gateway)).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn gateway(home: &Ca, revoked: &[u64], per_minute: u32) -> Gateway {
    let devices = DeviceAuthority::new(home.pem.as_bytes(), Some(crl(home, revoked).as_bytes())).unwrap();
    let tokens = TokenIssuer::new(&[0x42; 64]).unwrap();
    let keys = KeyRing::from_keys([(1, [3; 32])]);
    Gateway::new(devices, tokens, keys, per_minute)
}

/// The body form of `/auth/device`: fetch a challenge, sign it with `key`.
fn auth(addr: SocketAddr, pem: &str, key: &KeyPair) -> Reply {
    let c = post(addr, "/auth/challenge", &json!({}), None);
    assert_eq!(c.status, 200);
    assert_eq!(c.body["expires_in"], 60);
    let challenge = c.body["challenge"].as_str().unwrap();
    let sig = key.sign(format!("alicia-device-auth:{challenge}").as_bytes()).unwrap();
    let body = json!({"certificate": pem, "challenge": challenge, "signature": STANDARD.encode(sig)});
    post(addr, "/auth/device", &body, None)
}

#[test]
fn http_api() {
    let home = ca("home CA");
    let addr = start(gateway(&home, &[66], 100));

    let (pem, key) = device_with_key(&home, "hall-sensor", 1, -1, 30);
    let r = auth(addr, &pem, &key);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["expires_in"], 900);
    let token = r.body["token"].as_str().unwrap().to_string();
    let claims = TokenIssuer::new(&[0x42; 64]).unwrap().verify_password_jwt("hall-sensor", token.as_bytes()).unwrap();
    assert_eq!(claims.sub, "hall-sensor");

    let refused = [
        (device_with_key(&ca("other CA"), "hall-sensor", 1, -1, 30), "certificate is not signed by this home's CA"),
        (device_with_key(&home, "hall-sensor", 2, -30, -1), "certificate has expired"),
        (device_with_key(&home, "hall-sensor", 66, -1, 30), "certificate has been revoked"),
    ];
    for ((pem, key), reason) in refused {
        let r = auth(addr, &pem, &key);
        assert_eq!((r.status, r.body["message"].as_str()), (401, Some(reason)));
        assert_eq!(r.body["error"], "unauthorized", "{}", r.body);
    }
    let r = post(addr, "/auth/device", &json!({"certificate": "junk", "challenge": "x", "signature": ""}), None);
    assert_eq!(r.status, 401);
    assert!(r.body["message"].as_str().unwrap().starts_with("certificate is malformed"), "{}", r.body);
    assert_eq!(post(addr, "/auth/device", &json!({"cert": 1}), None).status, 400);

    // A certificate alone is not proof: it is public.
    let r = post(addr, "/auth/device", &json!({ "certificate": pem }), None);
    assert_eq!(r.status, 401);
    assert!(r.body["message"].as_str().unwrap().starts_with("proof of possession required"));
    // Signed with another key.
    let r = auth(addr, &pem, &KeyPair::generate().unwrap());
    assert_eq!(r.status, 401);
    assert!(r.body["message"].as_str().unwrap().starts_with("proof of possession failed"), "{}", r.body);
    // A challenge answered once cannot be replayed; one not issued here is refused.
    let c = post(addr, "/auth/challenge", &json!({}), None).body["challenge"].as_str().unwrap().to_string();
    let sig = STANDARD.encode(key.sign(format!("alicia-device-auth:{c}").as_bytes()).unwrap());
    let body = json!({"certificate": pem, "challenge": c, "signature": sig});
    assert_eq!(post(addr, "/auth/device", &body, None).status, 200);
    let again = post(addr, "/auth/device", &body, None);
    assert_eq!((again.status, again.body["message"].as_str()), (401, Some("challenge was already used")));
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 56]);
    let sig = STANDARD.encode(key.sign(format!("alicia-device-auth:{forged}").as_bytes()).unwrap());
    let r = post(addr, "/auth/device", &json!({"certificate": pem, "challenge": forged, "signature": sig}), None);
    assert_eq!((r.status, r.body["message"].as_str()), (401, Some("challenge was not issued by this gateway")));

    // Encryption needs a token.
    let plain = STANDARD.encode("secret payload");
    assert_eq!(post(addr, "/encrypt", &json!({ "plaintext": plain }), None).status, 401);
    assert_eq!(post(addr, "/encrypt", &json!({ "plaintext": plain }), Some("a.b.c")).status, 401);
    let e = post(addr, "/encrypt", &json!({ "plaintext": plain }), Some(&token));
    assert_eq!(e.status, 200, "{}", e.body);
    assert_eq!(e.body["key_id"], "enc-1");
    let d = post(addr, "/decrypt", &e.body, Some(&token));
    assert_eq!((d.status, &d.body["plaintext"]), (200, &json!(plain)));

    let mut raw = STANDARD.decode(e.body["ciphertext"].as_str().unwrap()).unwrap();
    raw[20] ^= 0x80;
    let t = post(addr, "/decrypt", &json!({"key_id": "enc-1", "ciphertext": STANDARD.encode(raw)}), Some(&token));
    assert_eq!(t.status, 400);
    assert!(t.body["message"].as_str().unwrap().contains("tampered"));
    assert_eq!(post(addr, "/encrypt", &json!({"plaintext": "%%"}), Some(&token)).status, 400);

    // Opting out of the proof: the certificate alone is enough (checks still apply).
    let lax = start(gateway(&home, &[66], 100).accept_certificates_without_proof());
    assert_eq!(post(lax, "/auth/device", &json!({ "certificate": pem }), None).status, 200);
    let revoked = device(&home, "x", 66, -1, 30);
    assert_eq!(post(lax, "/auth/device", &json!({ "certificate": revoked }), None).status, 401);
}

#[test]
fn http_rate_limit() {
    let home = ca("home CA");
    let addr = start(gateway(&home, &[], 3));
    for _ in 0..3 {
        assert_eq!(post(addr, "/encrypt", &json!({}), None).status, 401);
    }
    let r = post(addr, "/auth/device", &json!({"certificate": device(&home, "d", 1, -1, 30)}), None);
    assert_eq!(r.status, 429);
    assert_eq!(
        (r.body["error"].as_str(), r.body["message"].as_str()),
        (Some("too_many_requests"), Some("too many requests"))
    );
    let retry: u64 = r
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .expect("Retry-After header")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

/// A TLS listener hands the verified chain over as an extension; no body is needed.
#[test]
fn http_peer_certificate_from_tls_layer() {
    use alicia_gateway::http::{router, PeerCertificates};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let home = ca("home CA");
    let serve = |pem: String| {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let app = router(Arc::new(gateway(&home, &[66], 100))).layer(axum::Extension(PeerCertificates(vec![der])));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
            });
        });
        rx.recv().unwrap()
    };
    let ok = serve(device(&home, "porch-camera", 3, -1, 30));
    let r = post(ok, "/auth/device", &json!(null), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.body["token"].as_str().unwrap();
    assert_eq!(TokenIssuer::new(&[0x42; 64]).unwrap().verify(token).unwrap().sub, "porch-camera");
    let revoked = serve(device(&home, "porch-camera", 66, -1, 30));
    let r = post(revoked, "/auth/device", &json!(null), None);
    assert_eq!((r.status, r.body["message"].as_str()), (401, Some("certificate has been revoked")));
}

// ---------------------------------------------------------------- HTTPS with client certificates

/// A server certificate for 127.0.0.1, signed by `ca`: (certificate PEM, key PEM).
fn server_cert(ca: &Ca) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    p.distinguished_name.push(DnType::CommonName, "gateway");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(30);
    (p.signed_by(&key, &ca.issuer).unwrap().pem(), key.serialize_pem())
}

/// `POST /auth/device` with an empty body over TLS, presenting `client` (certificate PEM and
/// key) if given.
fn post_tls(addr: SocketAddr, ca_pem: &str, client: Option<(&str, &KeyPair)>) -> Reply {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((pem, key)) => {
            let chain = vec![CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    write!(s, "POST /auth/device HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    // The server may close without close_notify after the response; what was read counts.
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8(out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer: {out:?}"));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply { status, headers: head.to_ascii_lowercase(), body: serde_json::from_str(body).unwrap_or(Value::Null) }
}

/// The HTTPS listener: a client certificate is optional at the TLS layer; the handler says why
/// one is refused; a CRL rewritten on disk is honoured on the next request, without a restart.
#[test]
fn https_client_certificates_and_live_revocation() {
    let home = ca("home CA");
    let other = ca("other CA");
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, crl_file) = (dir.path().join("ca.crt"), dir.path().join("crl.pem"));
    std::fs::write(&ca_file, &home.pem).unwrap();
    std::fs::write(&crl_file, crl(&home, &[])).unwrap();
    let (server_pem, server_key) = server_cert(&home);
    std::fs::write(dir.path().join("server.crt"), server_pem).unwrap();
    std::fs::write(dir.path().join("server.key"), server_key).unwrap();

    let devices = DeviceAuthority::load(&ca_file, Some(&crl_file)).unwrap();
    let config =
        alicia_gateway::tls::server_config(&dir.path().join("server.crt"), &dir.path().join("server.key"), &devices)
            .unwrap();
    let gw = Gateway::new(devices, TokenIssuer::new(&[0x42; 64]).unwrap(), KeyRing::from_keys([(1, [3; 32])]), 100);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            alicia_gateway::tls::serve_tls(listener, Arc::new(config), Arc::new(gw)).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();

    let r = post_tls(addr, &home.pem, None);
    assert_eq!((r.status, r.body["message"].as_str()), (401, Some(alicia_gateway::http::NO_CERTIFICATE)));

    let (pem, key) = device_with_key(&home, "hall-sensor", 10, -1, 30);
    let r = post_tls(addr, &home.pem, Some((&pem, &key)));
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.body["token"].as_str().unwrap();
    assert_eq!(TokenIssuer::new(&[0x42; 64]).unwrap().verify(token).unwrap().sub, "hall-sensor");

    let (foreign, fkey) = device_with_key(&other, "hall-sensor", 10, -1, 30);
    let r = post_tls(addr, &home.pem, Some((&foreign, &fkey)));
    assert_eq!((r.status, r.body["message"].as_str()), (401, Some("certificate is not signed by this home's CA")));
    let (old, okey) = device_with_key(&home, "attic", 11, -30, -1);
    let r = post_tls(addr, &home.pem, Some((&old, &okey)));
    assert_eq!((r.status, r.body["message"].as_str()), (401, Some("certificate has expired")));

    // Revoke serial 10 by replacing the file, as `alicia certs revoke` does.
    let tmp = dir.path().join(".crl.tmp");
    std::fs::write(&tmp, crl(&home, &[10])).unwrap();
    std::fs::rename(&tmp, &crl_file).unwrap();
    let r = post_tls(addr, &home.pem, Some((&pem, &key)));
    assert_eq!((r.status, r.body["message"].as_str()), (401, Some("certificate has been revoked")));
    let (fresh, fkey) = device_with_key(&home, "hall-sensor", 12, -1, 30);
    assert_eq!(post_tls(addr, &home.pem, Some((&fresh, &fkey))).status, 200);

    // A CRL that cannot be read refuses everyone (fail closed) rather than forgetting revocations.
    std::fs::write(&crl_file, "-----BEGIN X509 CRL-----\nAAEC\n-----END X509 CRL-----\n").unwrap();
    let r = post_tls(addr, &home.pem, Some((&fresh, &fkey)));
    assert_eq!(r.status, 401, "{}", r.body);
}

/// Certificates made by the design document's `openssl` commands are X.509 v1 (OpenSSL 3's
/// `x509 -req` without extensions). The HTTPS listener serves a v1 server certificate and a v1
/// device certificate logs in with it, driven by the real curl; one from another CA does not.
#[test]
fn https_login_with_the_design_documents_v1_certificates() {
    let have = |c: &str| std::process::Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success());
    if !have("curl") || !std::process::Command::new("openssl").arg("version").status().is_ok_and(|s| s.success()) {
        eprintln!("SKIP: curl and openssl are needed (scripts/test.sh installs them)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let script =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/design/certificates.sh"))
            .unwrap();
    let other = r#"
openssl genrsa -out other.key 2048
openssl req -new -x509 -days 365 -key other.key -out other.crt -subj "/CN=Alicia-CA"
openssl genrsa -out intruder.key 2048
openssl req -new -key intruder.key -out intruder.csr -subj "/CN=device-001"
openssl x509 -req -days 365 -in intruder.csr -CA other.crt -CAkey other.key -out intruder.crt
"#;
    for s in [script.as_str(), other] {
        let out = std::process::Command::new("sh").arg("-ec").arg(s).current_dir(d).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let devices = DeviceAuthority::load(&d.join("ca.crt"), Some(&d.join("crl.pem"))).unwrap();
    let config = alicia_gateway::tls::server_config(&d.join("server.crt"), &d.join("server.key"), &devices)
        .expect("a v1 server certificate is served");
    let gw = Gateway::new(devices, TokenIssuer::new(&[0x42; 64]).unwrap(), KeyRing::from_keys([(1, [3; 32])]), 100);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            alicia_gateway::tls::serve_tls(listener, Arc::new(config), Arc::new(gw)).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    let login = |cert: &str| {
        // The server certificate names alicia-bus-core: resolve that name to the listener, so
        // curl checks the chain and the name.
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-X", "POST", "--resolve"])
            .arg(format!("alicia-bus-core:{}:127.0.0.1", addr.port()))
            .arg("--cacert")
            .arg(d.join("ca.crt"))
            .arg("--cert")
            .arg(d.join(format!("{cert}.crt")))
            .arg("--key")
            .arg(d.join(format!("{cert}.key")))
            .arg("-w")
            .arg("\n%{http_code}")
            .arg(format!("https://alicia-bus-core:{}/auth/device", addr.port()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "curl: {} {text}", String::from_utf8_lossy(&out.stderr));
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), serde_json::from_str::<Value>(body).unwrap_or(Value::Null))
    };
    let (code, body) = login("device");
    assert_eq!(code, "200", "{body}");
    let token = body["token"].as_str().unwrap();
    assert_eq!(TokenIssuer::new(&[0x42; 64]).unwrap().verify(token).unwrap().sub, "device-001");
    let (code, body) = login("intruder");
    assert_eq!((code.as_str(), body["message"].as_str()), ("401", Some("certificate is not signed by this home's CA")));
}
