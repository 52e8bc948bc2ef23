"""Drives Alicia's Wyoming servers with the reference implementation (PyPI `wyoming`) as the
client, the way Home Assistant's Wyoming integration does. Run by tests/wyoming.rs:

    python3 wyoming_client.py ASR_PORT TTS_PORT PATH:RATE:WIDTH:CHANNELS...

Prints one JSON object with what it saw; the Rust test judges it.
"""

import asyncio
import json
import sys

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

HOST = "127.0.0.1"


async def describe(port):
    async with AsyncTcpClient(HOST, port) as client:
        await client.write_event(Describe().event())
        while True:
            event = await client.read_event()
            if Info.is_type(event.type):
                return Info.from_event(event)


async def transcribe(client, rate, width, channels, pcm, language="en", chunk_frames=1024):
    await client.write_event(Transcribe(language=language).event())
    await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    step = chunk_frames * width * channels
    for i in range(0, len(pcm), step):
        chunk = AudioChunk(rate=rate, width=width, channels=channels, audio=pcm[i : i + step])
        await client.write_event(chunk.event())
    await client.write_event(AudioStop().event())
    while True:
        event = await client.read_event()
        if event is None:
            return {"closed": True}
        if Transcript.is_type(event.type):
            t = Transcript.from_event(event)
            return {"text": t.text, "language": t.language}
        if Error.is_type(event.type):
            e = Error.from_event(event)
            return {"error": e.code, "text": e.text}


def read_pcm(spec):
    """`path:rate:width:channels` -> (rate, width, channels, bytes)."""
    path, rate, width, channels = spec.rsplit(":", 3)
    with open(path, "rb") as f:
        return int(rate), int(width), int(channels), f.read()


async def synthesize(port, text, voice=None):
    async with AsyncTcpClient(HOST, port) as client:
        await client.write_event(Synthesize(text=text, voice=voice).event())
        fmt, audio, chunks = None, bytearray(), 0
        while True:
            event = await client.read_event()
            if event is None:
                return {"closed": True}
            if AudioStart.is_type(event.type):
                s = AudioStart.from_event(event)
                fmt = (s.rate, s.width, s.channels)
            elif AudioChunk.is_type(event.type):
                c = AudioChunk.from_event(event)
                assert fmt == (c.rate, c.width, c.channels), "chunks keep the start's format"
                audio += c.audio
                chunks += 1
            elif AudioStop.is_type(event.type):
                return {"format": fmt, "bytes": len(audio), "chunks": chunks, "audio": bytes(audio)}
            elif Error.is_type(event.type):
                e = Error.from_event(event)
                return {"error": e.code, "text": e.text}


async def main():
    asr_port, tts_port, clips = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    out = {}

    info = await describe(asr_port)
    out["asr_info"] = {
        "program": info.asr[0].name,
        "model": info.asr[0].models[0].name,
        "languages": info.asr[0].models[0].languages,
        "installed": info.asr[0].installed,
    }
    info = await describe(tts_port)
    out["tts_info"] = {
        "program": info.tts[0].name,
        "voices": [v.name for v in info.tts[0].voices],
        "languages": [v.languages for v in info.tts[0].voices],
    }

    # Clips in several formats, one connection for all of them (as a satellite keeps it).
    async with AsyncTcpClient(HOST, asr_port) as client:
        out["files"] = []
        for spec in clips:
            rate, width, channels, pcm = read_pcm(spec)
            r = await transcribe(client, rate, width, channels, pcm)
            r["format"] = [rate, width, channels]
            out["files"].append(r)
        # A bad format is an error event, and the connection stays usable.
        out["bad_width"] = await transcribe(client, 16000, 7, 1, b"\0" * 1400)
        out["silence"] = await transcribe(client, 16000, 2, 1, b"\0" * 32000)
        out["after_errors"] = await transcribe(client, *read_pcm(clips[0]))

    # Synthesize, then hear it back.
    said = "Turn off the living room lights."
    tts = await synthesize(tts_port, said, SynthesizeVoice(name="en_US-joe-medium"))
    audio = tts.pop("audio")
    out["tts"] = tts
    rate, width, channels = tts["format"]
    async with AsyncTcpClient(HOST, asr_port) as client:
        out["tts_heard"] = await transcribe(client, rate, width, channels, audio)
    by_language = await synthesize(tts_port, "Hello.", SynthesizeVoice(language="en_US"))
    by_language.pop("audio", None)
    out["tts_by_language"] = by_language
    out["tts_unknown_voice"] = await synthesize(tts_port, "Hello.", SynthesizeVoice(name="xx_XX-nobody-low"))
    out["tts_empty"] = await synthesize(tts_port, "   ")

    # Not Wyoming at all: the server answers with an error and closes; it keeps serving others.
    reader, writer = await asyncio.open_connection(HOST, asr_port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    await writer.drain()
    reply = await reader.read(4096)
    out["garbage_reply"] = reply.decode(errors="replace")
    writer.close()
    out["still_serving"] = (await describe(asr_port)).asr[0].name

    print(json.dumps(out))


asyncio.run(main())
