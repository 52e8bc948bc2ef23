"""The design document's messages, byte for byte from tests/fixtures/design/, over MQTT/TLS with
device certificates, under `alicia up`.

Two ways to get a device certificate, as a user would: `alicia devices add` (Alicia's own), and the
document's `openssl` commands (certificates.sh: X.509 v1 certificates, because OpenSSL 3's `x509
-req` adds no extensions), signed by the home's CA instead of a second one. Each device:

- publishes the document's registration verbatim and hears `registered` on its response topic;
- receives the document's device-control command (sent verbatim by `voice_processor`, a service
  with a certificate of its own) through the router on its command topic;
- sends the document's "standard format" template verbatim and hears every problem on its errors
  topic (it is a template, not a message);

and a device whose certificate says `device-001` (the document's CN) sending the registration of
`sonos_kitchen_001` is refused, and told why on its own errors topic.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import brokers
from pahoclient import Client
from upkit import up  # noqa: F401 (a fixture)

pytestmark = [
    pytest.mark.alicia_only("tests of the alicia binary's services"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed (scripts/test.sh installs it)"),
]

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "design"
DEVICE = "sonos_kitchen_001"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


class Tls:
    """Where a TLS client connects (what pahoclient.Client reads)."""

    def __init__(self, addr: str):
        host, port = addr.rsplit(":", 1)
        self.host, self.port = host, int(port)


def tls_client(x, certs: Path, cert: Path, key: Path, client_id: str) -> Client:
    c = Client(Tls(x.addrs["mqtts"]), client_id=client_id)
    c.c.tls_set(ca_certs=str(certs / "ca.crt"), certfile=str(cert), keyfile=str(key))
    c.c.tls_insecure_set(True)  # the test connects to 127.0.0.1; the server certificate names localhost
    c.connect()
    return c


def openssl_device(certs: Path, out: Path, cn: str) -> tuple[Path, Path]:
    """The document's device commands (certificates.sh), with the home's CA and the given CN."""
    script = fixture("certificates.sh").decode()
    device_part = script.split("# Generate device certificate", 1)[1]
    device_part = device_part.replace("CN=device-001", f"CN={cn}")
    device_part = device_part.replace("-CA ca.crt -CAkey ca.key", f"-CA {certs / 'ca.crt'} -CAkey {certs / 'ca.key'}")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(["bash", "-euc", device_part], cwd=out, check=True, capture_output=True, timeout=120)
    crt = out / "device.crt"
    version = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-text"], capture_output=True,
                             text=True, check=True).stdout
    assert "Version: 1 (0x0)" in version, "the document's commands make X.509 v1 certificates"
    return crt, out / "device.key"


def exchange(x, home: Path, cert: Path, key: Path):
    certs = home / "certs"
    dev = tls_client(x, certs, cert, key, DEVICE)
    try:
        dev.subscribe(f"alicia/devices/{DEVICE}/command", qos=1)
        dev.subscribe(f"alicia/devices/{DEVICE}/errors", qos=1)
        dev.subscribe(f"alicia/devices/{DEVICE}/registration/response", qos=1)

        # The registration, verbatim (its message_id is `device-reg-001`, it has no ttl).
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"alicia/devices/{DEVICE}/registration/response"
        dev.publish("alicia/system/discovery/register", fixture("device_registration.json"), qos=1,
                    properties=props)
        answer = json.loads(dev.get().payload)
        assert answer["payload"]["data"]["status"] in ("registered", "updated"), answer
        assert answer["correlation_id"] == "device-reg-001", answer

        # The device-control command, verbatim, from a service with its own certificate.
        svc = tls_client(x, certs, certs / "services/voice_processor.crt", certs / "services/voice_processor.key",
                         "voice_processor")
        try:
            svc.publish("alicia/services/router/inbox", fixture("device_control.json"), qos=1)
        finally:
            svc.close()
        got = dev.get()
        assert got.topic == f"alicia/devices/{DEVICE}/command", got.topic
        command = json.loads(got.payload)
        assert command["message_id"] == "device-control-001" and command["source"] == "voice_processor"
        assert command["payload"]["data"] == json.loads(fixture("device_control.json"))["payload"]["data"]
        assert command["routing"]["route"] == ["router"], command

        # The "standard format" is a template: every problem comes back to the device at once.
        dev.publish("alicia/services/router/inbox", fixture("standard_format.json"), qos=1)
        got = dev.get()
        assert got.topic == f"alicia/devices/{DEVICE}/errors", got.topic
        refused = json.loads(got.payload)
        assert refused["payload"]["metadata"]["status"] == "error", refused
        fields = {e["field"] for e in refused["payload"]["data"]["errors"]}
        assert {"destination", "message_type", "priority"} <= fields, refused
        dev.assert_no_message()
    finally:
        dev.close()


def test_the_documents_messages_over_tls(up, tmp_path):
    home, start = up
    x = start()
    alicia = brokers.alicia_bin()
    # A certificate for the service that sends the document's device command.
    out = subprocess.run([alicia, "certs", "service", "voice_processor", "--dir", str(home / "certs")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr

    # 1. With the certificate `alicia devices add` issues.
    added = subprocess.run([alicia, "devices", "add", DEVICE, "--type", "speaker", "--location", "kitchen",
                            "--home", str(home)], capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    certs = home / "certs" / "devices"
    exchange(x, home, certs / f"{DEVICE}.crt", certs / f"{DEVICE}.key")

    # 2. With one made by the document's openssl commands (X.509 v1), signed by the home's CA.
    crt, key = openssl_device(home / "certs", tmp_path / "openssl", DEVICE)
    exchange(x, home, crt, key)


def test_a_device_speaks_only_as_itself(up, tmp_path):
    home, start = up
    x = start()
    # The document's own device (CN=device-001) sends sonos_kitchen_001's registration.
    crt, key = openssl_device(home / "certs", tmp_path / "openssl", "device-001")
    dev = tls_client(x, home / "certs", crt, key, "device-001")
    try:
        dev.subscribe("alicia/devices/device-001/errors", qos=1)
        dev.publish("alicia/system/discovery/register", fixture("device_registration.json"), qos=1)
        got = dev.get()
        assert got.topic == "alicia/devices/device-001/errors", got.topic
        answer = json.loads(got.payload)
        assert answer["payload"]["metadata"]["status"] == "error", answer
        assert answer["payload"]["data"]["code"] == "forbidden", answer
        assert "device-001" in answer["payload"]["data"]["message"], answer
    finally:
        dev.close()
    # And the registry does not have it.
    import urllib.request
    import urllib.error
    try:
        urllib.request.urlopen(f"http://{x.addrs['registry']}/devices/{DEVICE}", timeout=10)
        raise AssertionError("the spoofed registration was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 404


@pytest.fixture
def voice_up(up):
    """`alicia up` once its speech-to-text service is registered (it loads its model in the
    background; waiting here, in the fixture, keeps the test's own time bound for the test)."""
    import time
    import urllib.request

    home, start = up
    x = start()
    deadline = time.monotonic() + 90
    while True:
        with urllib.request.urlopen(f"http://{x.addrs['registry']}/devices/capability/speech_to_text",
                                    timeout=10) as r:
            if json.loads(r.read())["count"] > 0:
                break
        assert time.monotonic() < deadline, "no speech_to_text provider registered"
        time.sleep(0.5)
    return home, x


def test_the_documents_stt_request_over_tls(voice_up, tmp_path):
    """The fourth message: the document's STT request (its audio_data placeholder replaced by a
    real WAV), from `voice_input` with a service certificate, through the router to
    `capability:speech_to_text`, answered on the MQTT 5 response topic it gave."""
    import base64

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is needed (scripts/test.sh installs it)")
    home, x = voice_up
    alicia = brokers.alicia_bin()
    out = subprocess.run([alicia, "certs", "service", "voice_input", "--dir", str(home / "certs")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    wav = tmp_path / "request.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), "turn on the kitchen light"], check=True)
    request = json.loads(fixture("voice_stt_request.json"))
    request["payload"]["data"]["audio_data"] = base64.b64encode(wav.read_bytes()).decode()
    certs = home / "certs"
    svc = tls_client(x, certs, certs / "services/voice_input.crt", certs / "services/voice_input.key", "voice_input")
    try:
        answers = "alicia/services/voice_input/reply/tls"  # its own reply topic (init's ACL)
        svc.subscribe(answers, qos=1)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = answers
        props.CorrelationData = request["message_id"].encode()
        svc.publish("alicia/services/router/inbox", json.dumps(request).encode(), qos=1, properties=props)
        answer = json.loads(svc.get(timeout=20).payload)
    finally:
        svc.close()
    assert answer["correlation_id"] == request["message_id"], answer
    data = answer["payload"]["data"]
    assert "kitchen light" in data["transcription"].lower(), answer
    assert data["language"] == "en" and 0 < data["confidence"] <= 1, answer
