"""The design document's Mosquitto setup, as written (issue 10): its mosquitto.conf and ACL
(tests/fixtures/design/, copied verbatim from the document) with the /mosquitto/... paths pointing at
real temporary files (and free ports instead of 1883/8883/9001), a password file written by
the real `mosquitto_passwd`, and certificates made by the document's own `openssl` commands,
which OpenSSL 3 makes X.509 v1. Real peers: mosquitto_pub/mosquitto_sub over TLS, paho-mqtt
over secure WebSockets."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

import brokers

pytestmark = [
    pytest.mark.alicia_only("alicia broker -c with the design document's files"),
    pytest.mark.skipif(not shutil.which("mosquitto_passwd") or not shutil.which("openssl"),
                       reason="mosquitto_passwd and openssl are needed (scripts/test.sh installs them)"),
]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "design"  # tests/fixtures/design


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(cwd: Path, script: str) -> None:
    r = subprocess.run(["bash", "-ec", script], cwd=cwd, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"{script}\n{r.stderr}"


# A v1 certificate exactly as the document makes its device certificate, for another CN.
def device_cert(certs: Path, cn: str, ca: str = "ca") -> None:
    sh(certs, f"""
openssl genrsa -out {cn}.key 2048
openssl req -new -key {cn}.key -out {cn}.csr -subj "/C=US/ST=State/L=City/O=Alicia/CN={cn}"
openssl x509 -req -days 365 -in {cn}.csr -CA {ca}.crt -CAkey {ca}.key -out {cn}.crt
""")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    certs = tmp_path_factory.mktemp("certs")
    sh(certs, (FIXTURES / "certificates.sh").read_text())  # the document's commands, verbatim
    device_cert(certs, "sonos_kitchen_001")
    # Another CA of the same name, and a device of it.
    sh(certs, """
openssl genrsa -out other.key 2048
openssl req -new -x509 -days 365 -key other.key -out other.crt -subj "/C=US/ST=State/L=City/O=Alicia/CN=Alicia-CA"
""")
    device_cert(certs, "intruder", ca="other")
    # An expired and a revoked device of the right CA, with `openssl ca` (still v1: no
    # extensions), and the CRL.
    sh(certs, """
mkdir -p db && : > db/index.txt && echo 01 > db/crlnumber && echo 1000 > db/serial
printf '[ca]\\ndefault_ca=home\\n[home]\\ndatabase=db/index.txt\\ncrlnumber=db/crlnumber\\nserial=db/serial\\nnew_certs_dir=db\\ndefault_md=sha256\\ndefault_crl_days=30\\npolicy=any\\n[any]\\ncommonName=supplied\\n' > ca.cnf
openssl genrsa -out expired.key 2048
openssl req -new -key expired.key -out expired.csr -subj "/CN=sonos_kitchen_001"
openssl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in expired.csr -out expired.crt -startdate 20200101000000Z -enddate 20210101000000Z 2>/dev/null
openssl genrsa -out revoked.key 2048
openssl req -new -key revoked.key -out revoked.csr -subj "/C=US/ST=State/L=City/O=Alicia/CN=sonos_kitchen_001"
openssl x509 -req -days 365 -in revoked.csr -CA ca.crt -CAkey ca.key -out revoked.crt
openssl ca -config ca.cnf -cert ca.crt -keyfile ca.key -revoke revoked.crt 2>/dev/null
openssl ca -config ca.cnf -cert ca.crt -keyfile ca.key -gencrl -out crl.pem 2>/dev/null
""")
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(certs / "device.crt")],
                          capture_output=True, text=True, check=True).stdout
    assert "Version: 1 (0x0)" in text, "the document's commands make v1 certificates"
    return certs


def design_setup(tmp: Path, pki: Path, extra: str = "") -> tuple[Path, dict[str, int]]:
    """The document's mosquitto.conf with its /mosquitto/... paths under `tmp`."""
    config = tmp / "config"
    config.mkdir()
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copy(pki / name, config / name)
    shutil.copy(FIXTURES / "acl", config / "acl")
    passwords = config / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "stt_service", "stt-secret-1"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "tts_service", "tts-secret-2"], check=True)
    (tmp / "log").mkdir()
    ports = {"mqtt": free_port(), "mqtts": free_port(), "wss": free_port()}
    text = (FIXTURES / "mosquitto.conf").read_text()
    assert "message_size_limit 268435456" in text and "/mosquitto/config/passwords" in text
    text = text.replace("/mosquitto/", f"{tmp}/")
    text = text.replace("listener 1883", f"listener {ports['mqtt']}")
    text = text.replace("listener 8883", f"listener {ports['mqtts']}")
    text = text.replace("listener 9001", f"listener {ports['wss']}")
    conf = tmp / "mosquitto.conf"
    conf.write_text(text + extra)
    return conf, ports


class Broker:
    def __init__(self, conf: Path):
        self.conf = conf
        self.stderr = conf.parent / "stderr"
        self.proc = subprocess.Popen([brokers.alicia_bin(), "broker", "-c", str(conf)],
                                     stdout=subprocess.PIPE, stderr=open(self.stderr, "wb"),
                                     stdin=subprocess.DEVNULL, text=True)
        lines = [self.proc.stdout.readline() for _ in range(3)]
        assert all(" listening on " in line for line in lines), (lines, self.stderr.read_text())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def design(tmp_path, pki):
    conf, ports = design_setup(tmp_path, pki)
    b = Broker(conf)
    yield tmp_path, ports, b
    b.stop()


def tls_pub(port: int, certs: Path, name: str, topic: str, msg: str = "hello") -> subprocess.CompletedProcess:
    # --insecure: the document's server certificate names alicia-bus-core, not this host; the
    # chain is still verified against --cafile.
    return subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic, "-m", msg,
         "-i", f"pub-{name}", "--cafile", str(certs / "ca.crt"), "--insecure",
         "--cert", str(certs / f"{name}.crt"), "--key", str(certs / f"{name}.key")],
        capture_output=True, text=True, timeout=20)


def test_the_design_conf_loads_as_written(design):
    tmp, ports, _ = design
    log = (tmp / "log" / "mosquitto.log").read_text()
    # One over Mosquitto's maximum: clamped, with a warning naming the file and the line.
    assert f"{tmp}/mosquitto.conf:8: message_size_limit: 268435456 is above MQTT's largest payload; using 268435455" in log
    assert (tmp / "data").is_dir(), "the persistence directory is created once everything checked out"


def test_password_users_from_mosquitto_passwd_and_the_acl(design):
    _, ports, _ = design
    got, done = [], threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="stt", protocol=mqtt.MQTTv5)
    c.username_pw_set("stt_service", "stt-secret-1")
    c.on_message = lambda _c, _u, m: (got.append((m.topic, m.payload)), done.set())
    c.connect("127.0.0.1", ports["mqtt"])
    c.loop_start()
    try:
        c.subscribe("alicia/voice/stt/#", qos=1)
        time.sleep(0.3)
        c.publish("alicia/voice/stt/request", b"audio", qos=1).wait_for_publish(5)
        assert done.wait(5), "the ACL lets stt_service read and write alicia/voice/stt/#"
        assert got == [("alicia/voice/stt/request", b"audio")]
    finally:
        c.loop_stop()
        c.disconnect()
    codes, answered = [], threading.Event()
    bad = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bad", protocol=mqtt.MQTTv5)
    bad.username_pw_set("stt_service", "wrong")
    bad.on_connect = lambda _c, _u, _f, rc, _p=None: (codes.append(rc), answered.set())
    bad.connect("127.0.0.1", ports["mqtt"])
    bad.loop_start()
    try:
        assert answered.wait(5)
        assert codes[0].is_failure and codes[0].value == 0x86, codes
    finally:
        bad.loop_stop()


def test_v1_certificates_over_tls_with_mosquitto_clients(design, pki):
    _, ports, _ = design
    topic = "alicia/devices/sonos_kitchen_001/status"
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(ports["mqtts"]), "-t", "alicia/devices/sonos_kitchen_001/#",
         "-C", "1", "-W", "15", "-i", "sub-sonos", "--cafile", str(pki / "ca.crt"), "--insecure",
         "--cert", str(pki / "sonos_kitchen_001.crt"), "--key", str(pki / "sonos_kitchen_001.key")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    r = tls_pub(ports["mqtts"], pki, "sonos_kitchen_001", topic, "playing")
    assert r.returncode == 0, r.stderr
    out, err = sub.communicate(timeout=20)
    assert out.strip() == "playing", (out, err)
    # The document's own device certificate (CN device-001) logs in too.
    r = tls_pub(ports["mqtts"], pki, "device", "alicia/devices/device-001/status")
    assert r.returncode == 0, r.stderr


def wss_roundtrip(port: int, certs: Path, name: str, protocol) -> bytes | None:
    got: list[bytes] = []
    done, connected = threading.Event(), threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"wss-{name}", transport="websockets", protocol=protocol)
    c.on_connect = lambda *a: connected.set()
    c.on_message = lambda _c, _u, m: (got.append(m.payload), done.set())
    c.tls_set(ca_certs=str(certs / "ca.crt"), certfile=str(certs / f"{name}.crt"), keyfile=str(certs / f"{name}.key"))
    c.tls_insecure_set(True)  # the server certificate's CN is alicia-bus-core
    try:
        c.connect("127.0.0.1", port, keepalive=30)
    except (ssl.SSLError, OSError):
        return None
    c.loop_start()
    try:
        if not connected.wait(5):
            return None
        c.subscribe("alicia/devices/sonos_kitchen_001/audio", qos=1)
        time.sleep(0.3)
        c.publish("alicia/devices/sonos_kitchen_001/audio", b"over wss", qos=1)
        done.wait(5)
    finally:
        c.loop_stop()
        c.disconnect()
    return got[0] if got else None


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
def test_v1_certificates_over_secure_websockets_with_paho(design, pki, protocol):
    _, ports, _ = design
    assert wss_roundtrip(ports["wss"], pki, "sonos_kitchen_001", protocol) == b"over wss"


def test_other_ca_expired_and_revoked_certificates_are_refused(tmp_path, pki):
    conf, ports = design_setup(tmp_path, pki)
    # The same configuration with the CRL on the TLS listener (after `listener 8883`'s block).
    text = conf.read_text().replace("use_identity_as_username true\n",
                                    f"use_identity_as_username true\ncrlfile {pki}/crl.pem\n", 1)
    conf.write_text(text)
    b = Broker(conf)
    try:
        topic = "alicia/devices/sonos_kitchen_001/status"
        assert tls_pub(ports["mqtts"], pki, "sonos_kitchen_001", topic).returncode == 0
        for name in ("intruder", "expired", "revoked"):
            r = tls_pub(ports["mqtts"], pki, name, topic)
            assert r.returncode != 0, f"{name} must be refused"
        log = (tmp_path / "log" / "mosquitto.log").read_text()
        assert "TLS handshake failed" in log
    finally:
        b.stop()


@pytest.mark.parametrize("missing,option", [("passwords", "password_file"), ("acl", "acl_file"),
                                            ("ca.crt", "cafile"), ("server.key", "keyfile")])
def test_a_missing_file_names_option_file_and_line_and_creates_nothing(tmp_path, pki, missing, option):
    conf, _ = design_setup(tmp_path, pki)
    (tmp_path / "config" / missing).unlink()
    r = subprocess.run([brokers.alicia_bin(), "broker", "-c", str(conf)], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    lines = conf.read_text().splitlines()
    line = next(i + 1 for i, text in enumerate(lines) if text.startswith(option) and missing in text)
    assert f"{conf}:{line}: {option}: cannot read {tmp_path}/config/{missing}" in r.stderr, r.stderr
    assert not (tmp_path / "data").exists(), "no persistence directory or store before validation"
    assert not (tmp_path / "log" / "mosquitto.log").exists(), "no log file either"


def test_log_type_debug_is_alicias_debug_not_third_party_noise(design, pki):
    tmp, ports, _ = design
    assert tls_pub(ports["mqtts"], pki, "sonos_kitchen_001", "alicia/devices/sonos_kitchen_001/x").returncode == 0
    time.sleep(0.3)
    log = (tmp / "log" / "mosquitto.log").read_text()
    assert "alicia_broker" in log and "connected" in log, "Alicia's debug lines are there"
    third_party_debug = [line for line in log.splitlines()
                         if " DEBUG " in line and " DEBUG alicia" not in line]
    assert third_party_debug == [], "no third-party debug lines (rustls, tokio, ...)"
    assert "Illegal SNI" not in log, "no warning for every client that connects to an IP address"


def test_log_type_error_only_and_log_dest_stdout(tmp_path, pki):
    conf, ports = design_setup(tmp_path, pki)
    text = conf.read_text()
    for t in ("warning", "notice", "information", "debug"):
        text = text.replace(f"log_type {t}\n", "")
    conf.write_text(text.replace("log_dest file", "log_dest stdout\nlog_dest file"))
    b = Broker(conf)
    try:
        assert tls_pub(ports["mqtts"], pki, "sonos_kitchen_001", "alicia/devices/sonos_kitchen_001/x").returncode == 0
        time.sleep(0.3)
        log = (tmp_path / "log" / "mosquitto.log").read_text()
        assert "connected" not in log and "WARN" not in log and "INFO" not in log, log
    finally:
        b.stop()
