"""Listeners from a configuration file: MQTT over WebSockets and over secure WebSockets with
client certificates, driven by paho-mqtt (v3.1.1 and v5), with certificates issued by
`alicia certs` into a temporary directory."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

import brokers

pytestmark = pytest.mark.alicia_only("alicia configuration file, certificates and listeners")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tls_broker(tmp_path: Path):
    alicia = brokers.alicia_bin()
    for args in (["ca"], ["server"], ["device", "kitchen-speaker"]):
        subprocess.run([alicia, "certs", *args, "--dir", str(tmp_path / "certs")], check=True,
                       capture_output=True, timeout=30)
    assert (tmp_path / "certs" / "ca.key").stat().st_mode & 0o777 == 0o600
    ports = {"mqtt": free_port(), "ws": free_port(), "wss": free_port()}
    (tmp_path / "alicia.yaml").write_text(f"""
broker:
  allow_anonymous: true
  sys_interval: 0
  listeners:
    - {{ port: {ports['mqtt']}, address: 127.0.0.1 }}
    - {{ port: {ports['ws']}, address: 127.0.0.1, protocol: websockets }}
    - port: {ports['wss']}
      address: 127.0.0.1
      protocol: websockets
      tls:
        cafile: certs/ca.crt
        certfile: certs/server.crt
        keyfile: certs/server.key
        require_certificate: true
        use_identity_as_username: true
""")
    proc = subprocess.Popen([alicia, "broker", "-c", str(tmp_path / "alicia.yaml")],
                            stdout=subprocess.PIPE, stderr=open(tmp_path / "stderr", "wb"),
                            stdin=subprocess.DEVNULL, text=True)
    lines = [proc.stdout.readline() for _ in range(3)]
    assert any("wss listening on" in line for line in lines), (lines, (tmp_path / "stderr").read_text())
    yield ports, tmp_path / "certs"
    proc.terminate()
    proc.wait(10)


def roundtrip(port: int, protocol, tls: dict | None = None) -> bytes | None:
    """Subscribes and publishes on one WebSocket connection; returns what came back."""
    got: list[bytes] = []
    done = threading.Event()
    connected = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, transport="websockets", protocol=protocol)
    c.on_connect = lambda *a: connected.set()
    c.on_message = lambda _c, _u, m: (got.append(m.payload), done.set())
    if tls is not None:
        c.tls_set(**tls)
    try:
        c.connect("localhost", port, keepalive=30)
    except (ssl.SSLError, OSError):
        return None
    c.loop_start()
    try:
        if not connected.wait(5):
            return None
        c.subscribe("ws/test", qos=1)
        time.sleep(0.3)
        c.publish("ws/test", b"over websockets", qos=1)
        done.wait(5)
    finally:
        c.loop_stop()
        c.disconnect()
    return got[0] if got else None


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
def test_websockets(tls_broker, protocol):
    ports, _ = tls_broker
    assert roundtrip(ports["ws"], protocol) == b"over websockets"


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
def test_secure_websockets_with_client_certificate(tls_broker, protocol):
    ports, certs = tls_broker
    tls = {"ca_certs": str(certs / "ca.crt"), "certfile": str(certs / "devices" / "kitchen-speaker.crt"),
           "keyfile": str(certs / "devices" / "kitchen-speaker.key")}
    assert roundtrip(ports["wss"], protocol, tls) == b"over websockets"


def test_secure_websockets_refuse_clients_without_certificate(tls_broker):
    ports, certs = tls_broker
    assert roundtrip(ports["wss"], mqtt.MQTTv311, {"ca_certs": str(certs / "ca.crt")}) is None
