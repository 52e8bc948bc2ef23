"""`alicia simulate` against `alicia up`, end to end: a speaker logs in over TLS with the client
certificate `alicia certs device` issued, a light with a gateway token on the plain listener;
both register (the registry's HTTP API shows them with their capability parameters), obey
commands a service sends through the router (paho-mqtt, MQTT 5 response topics), the speaker
writes what it plays to a WAV file at its volume, and a killed simulator's will marks it
offline."""

import json
import subprocess
import uuid
from pathlib import Path

import pytest

import brokers
from pahoclient import publish_props
from simkit import Simulator, wav_peak, write_wav
from test_up_services import http, wait_for
from upkit import envelope, login, up  # noqa: F401 (up is a fixture)

pytestmark = pytest.mark.alicia_only("tests of the alicia binary's simulated devices")


def request(svc, device: str, command: str, parameters: dict, timeout: float = 15.0) -> dict:
    """A request from the service `cli` to `device_id:<device>` through the router; the device's
    answer comes back on the MQTT 5 response topic."""
    reply_topic = f"alicia/services/cli/reply/{uuid.uuid4().hex[:8]}"
    svc.subscribe(reply_topic, qos=1)
    env = envelope("cli", f"device_id:{device}", "request", {"command": command, "parameters": parameters})
    svc.publish("alicia/services/router/inbox", json.dumps(env), qos=1,
                properties=publish_props(ResponseTopic=reply_topic, CorrelationData=env["message_id"].encode()))
    while True:
        m = svc.get(timeout)
        if m.topic == reply_topic:
            answer = json.loads(m.payload)
            assert answer["correlation_id"] == env["message_id"]
            return answer


def test_simulated_devices_under_alicia_up(up, tmp_path):
    home, start = up
    x = start()
    api = f"http://{x.addrs['registry']}"
    out = subprocess.run([brokers.alicia_bin(), "certs", "device", "sim_speaker", "--dir", str(home / "certs")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    audio = tmp_path / "played"
    speaker = Simulator("speaker", "sim_speaker", home, x.addrs["mqtts"], "--tls", "--location", "kitchen",
                        "--audio-dir", str(audio), "--speed", "20", workdir=tmp_path)
    light = Simulator("light", "sim_light", home, x.addrs["mqtt"], "--location", "hall", workdir=tmp_path)
    svc = login(x, home)
    try:
        for sim in (speaker, light):
            registered = sim.wait_for("registered")
            assert registered["answer"]["status"] in ("registered", "updated"), registered
        status, d = http("GET", f"{api}/devices/sim_speaker")
        assert status == 200 and d["status"] == "online" and d["location"] == "kitchen", d
        vc = next(c for c in d["capabilities"] if c["name"] == "volume_control")
        assert vc["parameters"]["mute_support"] is True and vc["parameters"]["step_size"] == 5
        assert d["endpoints"]["control"] == "alicia/devices/sim_speaker/command"

        answer = request(svc, "sim_light", "set_brightness", {"brightness": 25})
        assert answer["payload"]["data"]["brightness"] == 25, answer
        answer = request(svc, "sim_light", "turn_on", {})
        assert answer["payload"]["data"]["power"] == "on"
        cmd = light.wait_for("command", lambda e: e["envelope"]["payload"]["data"]["command"] == "turn_on")
        assert cmd["envelope"]["routing"]["route"] == ["router"]
        refused = request(svc, "sim_light", "set_brightness", {"brightness": 500})
        assert refused["payload"]["metadata"]["status"] == "error"
        assert refused["payload"]["data"]["code"] == "invalid_parameters"

        clip = write_wav(tmp_path / "clip.wav")
        answer = request(svc, "sim_speaker", "play_audio", {"audio_url": f"file://{clip}", "volume": 25})
        assert answer["payload"]["data"]["playback"] == "playing", answer
        played = speaker.wait_for("played")
        assert played["volume"] == 25 and not played["announcement"]
        peak = wav_peak(Path(played["path"]))
        assert 4900 <= peak <= 5100, f"a quarter of 20000 at volume 25: {peak}"

        # The device services of `alicia up`: an announcement on the design document's topic
        # reaches the speaker through speaker_manager; the sensor's telemetry is checked and its
        # latest readings retained by sensor_data.
        announce = envelope("cli", "alicia/devices/speakers/announce", "event",
                            {"device_id": "sim_speaker", "text": "the laundry is done"})
        svc.publish("alicia/devices/speakers/announce", json.dumps(announce), qos=1)
        played = speaker.wait_for("played", lambda e: e["announcement"])
        assert Path(played["path"]).exists()
        sensor = Simulator("sensor", "sim_sensor", home, x.addrs["mqtt"], "--interval", "0.2", workdir=tmp_path)
        try:
            sensor.wait_for("registered")
            svc.subscribe("alicia/sensors/sim_sensor", qos=1)
            m = svc.get()
            while m.topic != "alicia/sensors/sim_sensor":
                m = svc.get()
            latest = json.loads(m.payload)
            assert latest["readings"]["temperature"]["unit"] == "°C", latest
            assert -40 <= latest["readings"]["temperature"]["value"] <= 85
        finally:
            sensor.stop()

        # kill -9: the will fires, the registry marks the light offline.
        light.kill()
        wait_for(lambda: http("GET", f"{api}/devices/sim_light")[1]["status"] == "offline", "offline by will")
        # A clean stop says offline itself.
        assert speaker.stop() == 0
        wait_for(lambda: http("GET", f"{api}/devices/sim_speaker")[1]["status"] == "offline", "offline on stop")
    finally:
        svc.close()
        speaker.stop()
        light.stop()
