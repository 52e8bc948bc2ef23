"""The README's "Your first device" walkthrough, run step by step as a person would.

The commands come from the README itself (its `sh` blocks in that section) and from what
`alicia devices add` prints, so neither can drift from what works. Only two things differ from
a person's run: `alicia` is the binary under test, and `alicia up` gets free ports (a
developer's machine may have another Alicia on the defaults); the CLI finds the running
instance's ports in the home, as it does for everyone.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

import brokers

pytestmark = pytest.mark.alicia_only("the alicia binary's walkthrough")

README = Path(__file__).resolve().parents[2] / "README.md"
FREE_PORTS = ["--bind", "127.0.0.1", "--port", "0", "--tls-port", "0", "--gateway", "127.0.0.1:0",
              "--gateway-tls", "127.0.0.1:0", "--registry-http", "127.0.0.1:0",
              "--discovery-http", "127.0.0.1:0", "--data-store-http", "127.0.0.1:0", "--http", "127.0.0.1:0"]


def walkthrough() -> list[str]:
    """The shell commands of the README's "Your first device" section, in order."""
    text = README.read_text()
    section = text.split("## Your first device", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip()]


def test_the_readme_walkthrough_works(tmp_path):
    steps = walkthrough()
    assert steps == ["alicia up", "alicia devices add kitchen_sensor --type sensor --location kitchen",
                     "alicia devices remove kitchen_sensor"], steps
    env = dict(os.environ, HOME=str(tmp_path))  # the default home: ~/.config/alicia
    env.pop("ALICIA_HOME", None)
    env.pop("XDG_CONFIG_HOME", None)
    home = tmp_path / ".config" / "alicia"

    def alicia(cmd: str) -> list[str]:
        words = shlex.split(cmd)
        assert words[0] == "alicia", cmd
        return [brokers.alicia_bin(), *words[1:]]

    # Step: alicia up (free ports), until it says it is ready and where its home is.
    up = subprocess.Popen(alicia(steps[0]) + FREE_PORTS, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    listen = None
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            assert line, f"alicia up ended: {up.stderr.read()}"
            lines.append(line.strip())
            if line.startswith("next: "):
                break
        assert "alicia ready" in lines and any(l.startswith(f"home: {home}") for l in lines), lines
        assert "alicia devices add" in lines[-1], lines

        # Step: alicia devices add ...; it prints the device's commands.
        added = subprocess.run(alicia(steps[1]), env=env, capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stderr
        printed = [l.strip() for l in added.stdout.splitlines() if l.strip().startswith(("mosquitto_", "alicia "))]
        sub_cmd, pub_cmd, show_cmd = printed
        assert sub_cmd.startswith("mosquitto_sub") and pub_cmd.startswith("mosquitto_pub"), printed
        assert (home / "certs/devices/kitchen_sensor.crt").exists()
        assert oct((home / "certs/devices/kitchen_sensor.key").stat().st_mode & 0o777) == "0o600"

        # 1. The listener, as printed (line-buffered, so each message shows at once).
        listen = subprocess.Popen(["stdbuf", "-oL", *shlex.split(sub_cmd)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # mosquitto_sub has no "subscribed" line; give it its SUBACK
        assert listen.poll() is None, listen.stderr.read()

        # 2. The registration, as printed.
        pub = subprocess.run(shlex.split(pub_cmd), capture_output=True, text=True, timeout=30)
        assert pub.returncode == 0, pub.stderr

        # 3. Show it: online, the document's fields kept.
        def show() -> str:
            out = subprocess.run(alicia(show_cmd), env=env, capture_output=True, text=True, timeout=30)
            return out.stdout + out.stderr
        deadline = time.monotonic() + 10
        while "status        online" not in (shown := show()):
            assert time.monotonic() < deadline, shown
            time.sleep(0.2)
        assert "location      kitchen" in shown and "capabilities  temperature" in shown, shown

        # Something wrong, sent the same way: the listener hears every problem.
        wrong = shlex.split(pub_cmd)
        i = wrong.index("-f")
        wrong[i:i + 2] = ["-m", '{"source": "kitchen_sensor"}']
        assert subprocess.run(wrong, capture_output=True, timeout=30).returncode == 0
        deadline = time.monotonic() + 10
        while True:
            line = listen.stdout.readline()
            assert line and time.monotonic() < deadline, "no answer on the device's errors topic"
            if line.startswith("alicia/devices/kitchen_sensor/errors "):
                answer = json.loads(line.split(" ", 1)[1])
                break
        assert answer["payload"]["metadata"]["status"] == "error"
        fields = [e["field"] for e in answer["payload"]["data"]["errors"]]
        assert fields == ["message_id", "timestamp", "destination", "message_type", "payload"], answer

        # Another device's id with this certificate: refused, and told.
        reg = json.loads((home / "certs/devices/kitchen_sensor.registration.json").read_text())
        reg["payload"]["data"]["device_id"] = "front_door_lock"
        spoof = shlex.split(pub_cmd)
        spoof[i:i + 2] = ["-m", json.dumps(reg)]
        assert subprocess.run(spoof, capture_output=True, timeout=30).returncode == 0
        while True:
            line = listen.stdout.readline()
            assert line and time.monotonic() < deadline + 10, "no answer to the spoofed registration"
            if line.startswith("alicia/devices/kitchen_sensor/errors "):
                answer = json.loads(line.split(" ", 1)[1])
                break
        assert answer["payload"]["data"]["code"] == "forbidden", answer
        assert "front_door_lock" not in show_devices(alicia, env)

        # Step: alicia devices remove ...
        removed = subprocess.run(alicia(steps[2]), env=env, capture_output=True, text=True, timeout=60)
        assert removed.returncode == 0, removed.stderr
        assert "unregistered kitchen_sensor" in removed.stdout and "revoked" in removed.stdout, removed.stdout
        assert "kitchen_sensor" not in show_devices(alicia, env)
    finally:
        if listen:
            listen.kill()
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=30)


def show_devices(alicia, env) -> str:
    out = subprocess.run(alicia("alicia devices list"), env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout
