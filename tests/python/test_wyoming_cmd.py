"""`alicia wyoming` on its own, as a Home Assistant user runs it beside HA: the text-to-speech and
wake word servers driven by the reference client (PyPI `wyoming`), the way Home Assistant's
Wyoming integration drives them. Piper's "Alexa" (from the TTS server) streamed to the wake word
server is detected as `alexa`; a command is `not-detected`. Real models (fetched by
scripts/test.sh; openWakeWord's with `alicia models fetch openwakeword`)."""

from __future__ import annotations

import asyncio
import array
import socket
import subprocess
import time

import pytest

from brokers import alicia_bin, free_port
from wyokit import describe, synthesize

pytestmark = pytest.mark.alicia_only("tests of the alicia binary")


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"alicia wyoming exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listening on {port}")


@pytest.fixture
def servers():
    tts, wake = free_port(), free_port()
    proc = subprocess.Popen(
        [alicia_bin(), "wyoming", "--no-asr", "--tts", f"127.0.0.1:{tts}", "--wake", f"127.0.0.1:{wake}",
         "--offline"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(tts, proc)
        wait_port(wake, proc)
        yield tts, wake
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_a_wake_word_said_by_piper_is_detected(servers):
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.wake import Detect, Detection, NotDetected

    tts_port, wake_port = servers

    async def detect(fmt, audio, names=None):
        rate, width, channels = fmt
        # A second of silence either side, as a microphone that is always open hears it.
        pad = bytes(rate * width * channels)
        pcm = pad + audio + pad
        async with AsyncTcpClient("127.0.0.1", wake_port) as client:
            await client.write_event(Detect(names=names).event())
            await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
            step = 1024 * width * channels
            for i in range(0, len(pcm), step):
                await client.write_event(
                    AudioChunk(rate=rate, width=width, channels=channels, audio=pcm[i:i + step]).event())
            await client.write_event(AudioStop().event())
            seen = []
            while True:
                e = await asyncio.wait_for(client.read_event(), timeout=30)
                assert e is not None, "closed before not-detected"
                if Detection.is_type(e.type):
                    seen.append(Detection.from_event(e).name)
                    # Home Assistant stops streaming at the first detection; so does this client.
                    return seen
                if NotDetected.is_type(e.type):
                    return seen

    async def scenario():
        info = await describe("127.0.0.1", wake_port)
        assert [m.name for m in info.wake[0].models] == ["alexa", "hey_mycroft"]
        assert info.wake[0].models[1].phrase == "hey mycroft"

        fmt, alexa = await synthesize("127.0.0.1", tts_port, "Alexa.")
        assert fmt[1:] == (2, 1)
        assert await detect(fmt, alexa) == ["alexa"]
        _, command = await synthesize("127.0.0.1", tts_port, "Turn on the kitchen light.")
        assert await detect(fmt, command) == []
        # Louder or quieter, it is the same word.
        quiet = array.array("h", alexa)
        for i, v in enumerate(quiet):
            quiet[i] = v // 4
        assert await detect(fmt, quiet.tobytes()) == ["alexa"]

    asyncio.run(scenario())


def test_nothing_to_serve_is_an_error():
    out = subprocess.run([alicia_bin(), "wyoming", "--no-asr", "--no-tts"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0
    assert "nothing to serve" in out.stderr, out.stderr
