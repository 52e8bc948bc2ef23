"""`alicia simulate` as a subprocess: start a simulated device, read its events (JSON lines on
stdout), stop it cleanly (SIGTERM) or kill it (SIGKILL: its will fires)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
import wave
from pathlib import Path

import brokers


class Simulator:
    def __init__(self, kind: str, device_id: str, home: Path, broker: str, *extra: str,
                 workdir: Path | None = None):
        self.kind, self.id = kind, device_id
        self.args = [brokers.alicia_bin(), "simulate", kind, device_id, "--home", str(home),
                     "--broker", broker, *extra]
        self.log_path = (workdir or home.parent) / f"simulate-{device_id}.stderr"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=log,
                                         stdin=subprocess.DEVNULL)
        self._buf = b""
        self.events: list[dict] = []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def next_event(self, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.id}: no event within {timeout}s; stderr:\n{self.log()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"{self.id}: exited ({self.proc.wait()}); stderr:\n{self.log()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        event = json.loads(line)
        self.events.append(event)
        return event

    def wait_for(self, kind: str, predicate=None, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            e = self.next_event(max(0.01, deadline - time.monotonic()))
            if e["event"] == kind and (predicate is None or predicate(e)):
                return e

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)

    def kill(self) -> int:
        self.proc.kill()
        return self.proc.wait(10)


def write_wav(path: Path, seconds: float = 0.5, rate: int = 8000, amplitude: int = 20000) -> Path:
    """A square wave, mono 16-bit."""
    frames = int(seconds * rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(
            (amplitude if i % 2 == 0 else -amplitude).to_bytes(2, "little", signed=True) for i in range(frames)))
    return path


def wav_peak(path: Path) -> int:
    with wave.open(str(path), "rb") as w:
        data = w.readframes(w.getnframes())
    return max(abs(int.from_bytes(data[i:i + 2], "little", signed=True)) for i in range(0, len(data), 2))
