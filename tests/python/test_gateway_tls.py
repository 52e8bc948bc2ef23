"""The security gateway's HTTPS listener (issue 4) with real tools: curl with and without a
client certificate, expired, foreign and revoked certificates refused with the reason, the
token used by paho-mqtt to log in to the broker, `alicia certs revoke` honoured by the gateway
at once and by the broker's TLS listener after the reload it triggers, and the per-client rate
limit read from alicia.yaml (alicia only)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import brokers

pytestmark = [
    pytest.mark.alicia_only("tests of the alicia binary"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed"),
]


class Up:
    """`alicia up` in a fresh home, with every port chosen free and read from its stdout."""

    def __init__(self, tmp_path: Path, home: Path | None = None):
        self.home = home or tmp_path / "home"
        # Only the first stdout line is read by start_alicia, so the other ports are chosen here.
        self.ports = {kind: brokers.free_port() for kind in ("mqtts", "gateway", "gateway-tls")}
        self.x = brokers.start_alicia(tmp_path, ["--home", str(self.home),
                                                 "--tls-port", str(self.ports["mqtts"]),
                                                 "--http", "127.0.0.1:0",
                                                 "--gateway", f"127.0.0.1:{self.ports['gateway']}",
                                                 "--gateway-tls", f"127.0.0.1:{self.ports['gateway-tls']}"],
                                      subcommand="up")
        self.addrs = {kind: f"127.0.0.1:{port}" for kind, port in self.ports.items()}
        brokers.wait_listening("127.0.0.1", self.ports["gateway-tls"], self.x.proc, brokers.STARTUP_TIMEOUT)
        self.https = f"https://{self.addrs['gateway-tls']}"
        self.certs = self.home / "certs"

    def port(self, kind: str) -> int:
        return int(self.addrs[kind].rsplit(":", 1)[1])

    def alicia(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([brokers.alicia_bin(), *args], capture_output=True, text=True, timeout=30)

    def device(self, name: str, *extra: str, certs: Path | None = None) -> tuple[Path, Path]:
        d = certs or self.certs
        out = self.alicia("certs", "device", name, "--dir", str(d), *extra)
        assert out.returncode == 0, out.stderr
        return d / "devices" / f"{name}.crt", d / "devices" / f"{name}.key"

    def stop(self) -> None:
        assert self.x.stop() == 0, self.x.log()


def curl(url: str, ca: Path, cert: tuple[Path, Path] | None = None, method: str = "POST") -> tuple[int, dict]:
    """One request with the real curl; returns (status, JSON body)."""
    args = ["curl", "-sS", "--max-time", "10", "--cacert", str(ca), "-X", method,
            "-o", "-", "-w", "\n%{http_code}", url]
    if cert:
        args += ["--cert", str(cert[0]), "--key", str(cert[1])]
    out = subprocess.run(args, capture_output=True, text=True, timeout=15)
    assert out.returncode == 0, f"curl failed: {out.stderr}"
    body, _, status = out.stdout.rpartition("\n")
    return int(status), (json.loads(body) if body.strip() else {})


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def mqtt_login(port: int, user: str, token: str) -> int:
    """paho-mqtt (MQTT 5) logs in with the token as password; returns the CONNACK reason."""
    import paho.mqtt.client as mqtt

    result: list[int] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-paho", protocol=mqtt.MQTTv5)
    c.username_pw_set(user, token)
    c.on_connect = lambda cl, u, flags, rc, props=None: result.append(rc.value)
    c.connect("127.0.0.1", port)
    c.loop_start()
    for _ in range(50):
        if result:
            break
        time.sleep(0.1)
    c.loop_stop()
    c.disconnect()
    assert result, "no CONNACK"
    return result[0]


def tls_publish(port: int, ca: Path, cert: tuple[Path, Path], topic: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "--cafile", str(ca),
                           "--cert", str(cert[0]), "--key", str(cert[1]), "-V", "mqttv5", "-d", "-t", topic,
                           "-m", "hi"], capture_output=True, text=True, timeout=15)


def test_mtls_login_then_mqtt_with_token(tmp_path):
    up = Up(tmp_path)
    try:
        ca = up.certs / "ca.crt"
        # No certificate: not a TLS error, a 401 that says what is missing.
        status, body = curl(up.https + "/auth/device", ca)
        assert status == 401 and "no client certificate" in body["message"], body

        cert = up.device("sonos_kitchen_001")
        status, body = curl(up.https + "/auth/device", ca, cert)
        assert status == 200, body
        claims = jwt_claims(body["token"])
        assert claims["sub"] == "sonos_kitchen_001" and body["expires_in"] > 0
        assert mqtt_login(up.x.port, "sonos_kitchen_001", body["token"]) == 0
        # The token is this device's only.
        assert mqtt_login(up.x.port, "other_device", body["token"]) == 0x86

        # Expired (issued with a past expiry date) and from another CA: refused, with the reason.
        old = up.device("old_speaker", "--not-after", "2020-01-01")
        status, body = curl(up.https + "/auth/device", ca, old)
        assert (status, body.get("message")) == (401, "certificate has expired"), body
        other = tmp_path / "other"
        assert up.alicia("certs", "ca", "--dir", str(other)).returncode == 0
        foreign = up.device("sonos_kitchen_001", certs=other)
        status, body = curl(up.https + "/auth/device", ca, foreign)
        assert (status, body.get("message")) == (401, "certificate is not signed by this home's CA"), body
    finally:
        up.stop()


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="mosquitto-clients not installed")
def test_revoked_certificate_refused_by_gateway_and_broker(tmp_path):
    up = Up(tmp_path)
    try:
        ca = up.certs / "ca.crt"
        cert = up.device("porch_camera")
        keep = up.device("hall_sensor")
        assert curl(up.https + "/auth/device", ca, cert)[0] == 200
        pub = tls_publish(up.port("mqtts"), ca, cert, "alicia/devices/porch_camera/state")
        assert pub.returncode == 0, pub.stderr

        out = up.alicia("certs", "revoke", "porch_camera", "--dir", str(up.certs))
        assert out.returncode == 0, out.stderr
        assert "asked the running broker" in out.stderr, out.stderr
        listed = subprocess.run(["openssl", "crl", "-in", str(up.certs / "crl.pem"), "-noout", "-text"],
                                capture_output=True, text=True, timeout=10)
        assert listed.returncode == 0 and "Revoked Certificates" in listed.stdout, listed

        # The gateway: on the very next request, without a restart.
        status, body = curl(up.https + "/auth/device", ca, cert)
        assert (status, body.get("message")) == (401, "certificate has been revoked"), body
        assert curl(up.https + "/auth/device", ca, keep)[0] == 200

        # The broker's TLS listener: after the reload `certs revoke` asked for.
        deadline = time.monotonic() + 10
        while True:
            pub = tls_publish(up.port("mqtts"), ca, cert, "alicia/devices/porch_camera/state")
            if pub.returncode != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert pub.returncode != 0, "the broker still accepts the revoked certificate"
        assert "certificate revoked" in pub.stdout + pub.stderr, pub
        ok = tls_publish(up.port("mqtts"), ca, keep, "alicia/devices/hall_sensor/state")
        assert ok.returncode == 0, ok.stderr
        assert "reloaded passwords, ACL and certificates" in up.x.log()

        # By serial number too; revoking twice is harmless.
        serial = subprocess.run(["openssl", "x509", "-in", str(keep[0]), "-noout", "-serial"],
                                capture_output=True, text=True, timeout=10).stdout.strip().split("=")[1]
        assert up.alicia("certs", "revoke", "--serial", serial, "--dir", str(up.certs)).returncode == 0
        out = up.alicia("certs", "revoke", str(keep[0]), "--dir", str(up.certs))
        assert out.returncode == 0 and "already revoked" in out.stderr, out.stderr
        status, body = curl(up.https + "/auth/device", ca, keep)
        assert (status, body.get("message")) == (401, "certificate has been revoked"), body
    finally:
        up.stop()


def test_rate_limit_from_config(tmp_path):
    home = tmp_path / "home"
    out = subprocess.run([brokers.alicia_bin(), "init", str(home)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    config = home / "alicia.yaml"
    text = config.read_text()
    assert "max_requests_per_minute: 60" in text
    config.write_text(text.replace("max_requests_per_minute: 60", "max_requests_per_minute: 3"))
    up = Up(tmp_path, home)
    try:
        ca = home / "certs" / "ca.crt"
        for _ in range(3):
            assert curl(up.https + "/auth/device", ca)[0] == 401
        status, body = curl(up.https + "/auth/device", ca)
        assert (status, body.get("message")) == (429, "too many requests"), body
        # One budget per client across HTTP and HTTPS.
        status, _ = curl(f"http://{up.addrs['gateway']}/auth/challenge", ca)
        assert status == 429
    finally:
        up.stop()

    # A wrong value is refused at start-up, naming file and line.
    config.write_text(text.replace("max_requests_per_minute: 60", "max_requests_per_minute: many"))
    out = subprocess.run([brokers.alicia_bin(), "up", "--home", str(home), "--port", "0", "--tls-port", "0",
                          "--http", "127.0.0.1:0", "--gateway", "127.0.0.1:0", "--gateway-tls", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "max_requests_per_minute" in l)
    assert f"alicia.yaml:{line}:" in out.stderr and "max_requests_per_minute" in out.stderr, out.stderr
