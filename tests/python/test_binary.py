"""The alicia binary itself: the listening line, `up`, signals (alicia only)."""

import signal
import socket
import subprocess
import time

import pytest

import brokers
import mqttraw as r
from upkit import hs256

pytestmark = pytest.mark.alicia_only("tests of the alicia binary")


def test_listening_line_and_free_port(tmp_path):
    a = brokers.start_alicia(tmp_path)
    (tmp_path / "b").mkdir()
    b = brokers.start_alicia(tmp_path / "b")
    try:
        assert a.port != b.port and 0 not in (a.port, b.port)
        for x in (a, b):
            c = r.RawClient(x.host, x.port, 4)
            c.handshake("line-check")
            c.close()
    finally:
        a.stop()
        b.stop()


def test_up_subcommand_is_secure_on_first_start(tmp_path):
    """`alicia up` in an empty home creates a configuration with authentication on: anonymous
    clients are refused (v5 0x87 not authorised), a core service logs in with the random
    password `init` wrote to a 0600 file, and no secret reaches the logs."""
    home = tmp_path / "home"
    x = brokers.start_alicia(tmp_path, ["--home", str(home), "--tls-port", "0", "--http", "127.0.0.1:0"],
                            subcommand="up")
    try:
        c = r.RawClient(x.host, x.port, 5)
        c.handshake("anonymous", expect_reason=0x87)
        c.close()
        secret = home / "secrets" / "router.password"
        assert secret.stat().st_mode & 0o777 == 0o600
        password = secret.read_text()
        assert len(password) >= 32
        pub = subprocess.run(["mosquitto_pub", "-h", x.host, "-p", str(x.port), "-u", "router", "-P", password,
                              "-t", "alicia/up-check", "-m", "hi"], capture_output=True, timeout=10)
        assert pub.returncode == 0, pub.stderr
        assert password not in x.log()
    finally:
        assert x.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_broker(tmp_path, sig):
    x = brokers.start_alicia(tmp_path)
    c = r.RawClient(x.host, x.port, 4)
    c.handshake("sig-check")
    x.proc.send_signal(sig)
    try:
        code = x.proc.wait(5)
    except Exception:  # noqa: BLE001
        x.stop(signal.SIGKILL)
        raise AssertionError(f"alicia still running 5 s after {sig.name}") from None
    assert code == 0, f"exit status {code}; stderr:\n{x.log()}"
    with pytest.raises(OSError):
        socket.create_connection((x.host, x.port), timeout=1).close()
    c.close()


def test_port_in_use_fails_cleanly(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run([brokers.alicia_bin(), "broker", "--bind", "127.0.0.1", "--port",
                              str(port)], capture_output=True, timeout=10)
    assert out.returncode != 0
    assert b"mqtt listening" not in out.stdout
    assert out.stderr, "an error message on stderr"


def test_up_accepts_gateway_tokens_as_passwords(tmp_path):
    """A device logs in with a JWT from the security gateway as its password (user name = the
    token's subject); a token for another device, an expired one or a forged one is refused."""
    import time

    home = tmp_path / "home"
    x = brokers.start_alicia(tmp_path, ["--home", str(home), "--tls-port", "0", "--http", "127.0.0.1:0"],
                            subcommand="up")
    try:
        secret = bytes.fromhex((home / "keys" / "jwt.key").read_text().strip())
        now = int(time.time())
        claims = {"sub": "sonos_kitchen_001", "iss": "alicia-gateway", "aud": "alicia-broker",
                  "iat": now, "nbf": now, "exp": now + 600}

        def connect(user: str, token: str) -> int:
            c = r.RawClient(x.host, x.port, 5)
            try:
                c.send(r.connect("dev", 5, username=user, password=token.encode()))
                return c.expect(r.CONNACK).reason
            finally:
                c.close()

        assert connect("sonos_kitchen_001", hs256(secret, claims)) == 0
        assert connect("other_device", hs256(secret, claims)) == 0x86
        assert connect("sonos_kitchen_001", hs256(secret, {**claims, "exp": now - 120})) == 0x86
        assert connect("sonos_kitchen_001", hs256(b"x" * 64, claims)) == 0x86
    finally:
        assert x.stop() == 0


def test_up_gateway_device_login_then_mqtt_with_token(tmp_path):
    """The whole device login of issue 4 with real tools: `alicia certs device` issues a
    certificate, the device answers a challenge from the gateway by signing it with its key
    (openssl), gets a token, and paho-mqtt connects to the broker with it; a certificate from
    another CA is refused with a reason."""
    import base64
    import json
    import shutil
    import urllib.error
    import urllib.request

    import paho.mqtt.client as mqtt

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    home = tmp_path / "home"
    gw_port = brokers.free_port()
    x = brokers.start_alicia(tmp_path, ["--home", str(home), "--tls-port", "0", "--http", "127.0.0.1:0",
                                        "--gateway", f"127.0.0.1:{gw_port}"], subcommand="up")
    try:
        subprocess.run([brokers.alicia_bin(), "certs", "device", "sonos_kitchen_001", "--dir", str(home / "certs")],
                       check=True, capture_output=True, timeout=30)
        cert = home / "certs" / "devices" / "sonos_kitchen_001.crt"
        key = home / "certs" / "devices" / "sonos_kitchen_001.key"
        base = f"http://127.0.0.1:{gw_port}"

        def post(path: str, body: dict) -> tuple[int, dict]:
            req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        def login(cert_path, key_path) -> tuple[int, dict]:
            status, c = post("/auth/challenge", {})
            assert status == 200, c
            msg = tmp_path / "challenge"
            msg.write_bytes(b"alicia-device-auth:" + c["challenge"].encode())
            sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key_path), str(msg)],
                                 check=True, capture_output=True, timeout=10).stdout
            return post("/auth/device", {"certificate": cert_path.read_text(), "challenge": c["challenge"],
                                         "signature": base64.b64encode(sig).decode()})

        status, answer = login(cert, key)
        assert status == 200, answer
        token = answer["token"]

        connected = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sonos", protocol=mqtt.MQTTv5)
        c.username_pw_set("sonos_kitchen_001", token)
        c.on_connect = lambda cl, u, flags, rc, props=None: connected.append(rc.value)
        c.connect(x.host, x.port)
        c.loop_start()
        for _ in range(50):
            if connected:
                break
            time.sleep(0.1)
        c.loop_stop()
        c.disconnect()
        assert connected == [0]

        # A certificate from another CA: refused, with the reason.
        other = tmp_path / "other"
        for args in (["ca"], ["device", "sonos_kitchen_001"]):
            subprocess.run([brokers.alicia_bin(), "certs", *args, "--dir", str(other)], check=True,
                           capture_output=True, timeout=30)
        status, answer = login(other / "devices" / "sonos_kitchen_001.crt", other / "devices" / "sonos_kitchen_001.key")
        assert status == 401 and answer["error"] == "unauthorized" and answer["message"], answer
    finally:
        assert x.stop() == 0
