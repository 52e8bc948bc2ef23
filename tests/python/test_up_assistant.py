"""The assistant under `alicia up`, end to end with real clients: a speaker (paho-mqtt, logged in
with a gateway token under the device ACL) registers with the design document's message; `alicia
ask` sends text over the bus to `ai_service` (which runs under its own narrow ACL) and prints each
stage; the speaker receives the signed command through the router, and its state answers a
question."""

import json
import subprocess
import time

import pytest

import brokers
from test_up_services import DEVICE, REGISTRATION, device_client, fresh
from test_up_voice import espeak_wav
from upkit import up  # noqa: F401 (a fixture)

pytestmark = pytest.mark.alicia_only("tests of the alicia binary's services")


def ask(x, home, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([brokers.alicia_bin(), "ask", *args, "--home", str(home), "--broker", x.addrs["mqtt"]],
                          capture_output=True, text=True, timeout=30)


def ask_json(x, home, *args: str) -> dict:
    out = ask(x, home, "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_alicia_ask_commands_a_registered_speaker(up, tmp_path):
    home, start = up
    x = start()
    dev = device_client(x, home)
    try:
        dev.subscribe(f"alicia/devices/{DEVICE}/command", qos=1)
        dev.publish("alicia/system/discovery/register", json.dumps(fresh(REGISTRATION)), qos=1)
        assert json.loads(dev.get().payload)["payload"]["data"]["status"] == "registered"
        dev.publish(f"alicia/devices/{DEVICE}/state", json.dumps({"volume": 20, "playback": "playing"}), qos=1,
                    retain=True)

        # The assistant learns the speaker from the registry's retained inventory (named from
        # its location and type, "Kitchen Speaker", and by its maker, "Sonos").
        deadline = time.monotonic() + 15
        while True:
            a = ask_json(x, home, "pause the sonos")
            if a["outcome"] == "action" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert a["response"] == "Paused", a
        got = json.loads(dev.get().payload)
        assert got["payload"]["data"] == {"command": "pause", "parameters": {}}
        assert got["source"] == "ai_service" and got["routing"]["route"] == ["router"]
        assert got["security"]["key_id"] == "ai_service" and got["security"]["signature"], "signed"

        # The human-readable form: one line per stage with its time.
        out = ask(x, home, "set the volume to 30", "--satellite", DEVICE)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        stages = [line.split()[0] for line in lines]
        assert stages == ["heard", "recognize", "plan", "send", "respond", "total"], out.stdout
        assert "HassSetVolume" in lines[1] and "ms" in lines[1], out.stdout
        assert f"{DEVICE}: set_volume" in lines[3] and "sent" in lines[3], out.stdout
        assert '"Volume set"' in lines[4], out.stdout
        assert "round trip" in lines[5], out.stdout
        got = json.loads(dev.get().payload)
        assert got["payload"]["data"] == {"command": "set_volume", "parameters": {"volume": 30}}

        # Questions are answered from the device's retained state (which the ACL lets it read).
        a = ask_json(x, home, "what is the kitchen speaker")
        assert a["response"] == "Kitchen speaker is playing" and a["outcome"] == "answer", a

        a = ask_json(x, home, "make me a sandwich")
        assert a["response"] == "Sorry, I don't know how to make you a sandwich" and a["outcome"] == "no_match", a
        dev.assert_no_message()

        # Spoken: the WAV goes to the STT service on the bus, its transcript to the assistant.
        wav = espeak_wav("pause the kitchen speaker", tmp_path / "pause.wav")
        out = ask(x, home, "--wav", str(wav))
        assert out.returncode == 0, out.stderr
        assert out.stderr.startswith("stt ") and "speech to text by stt_service" in out.stderr, out.stderr
        assert f"{DEVICE}: pause" in out.stdout, out.stdout
        got = json.loads(dev.get().payload)
        assert got["payload"]["data"] == {"command": "pause", "parameters": {}}
    finally:
        dev.close()

    out = ask(x, home, "--wav", str(tmp_path / "missing.wav"))
    assert out.returncode != 0 and "cannot read" in out.stderr and "missing.wav" in out.stderr, out.stderr
