"""Drives Alicia's Wyoming wake word server with the reference implementation (PyPI `wyoming`)
as the client, the way Home Assistant's Wyoming integration does: `describe`, then for each
stream `detect`, `audio-start`, chunks of 1024 frames, `audio-stop`, collecting `detection`s
until `not-detected` or the connection has been quiet after the stop. Run by tests/wake.rs:

    python3 wake_client.py PORT PATH:RATE:WIDTH:CHANNELS...

Prints one JSON object with what it saw; the Rust test judges it.
"""

import asyncio
import json
import sys

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.wake import Detect, Detection, NotDetected

HOST = "127.0.0.1"


def read_pcm(spec):
    path, rate, width, channels = spec.rsplit(":", 3)
    with open(path, "rb") as f:
        return int(rate), int(width), int(channels), f.read()


async def stream(port, spec, names=None):
    rate, width, channels, pcm = read_pcm(spec)
    async with AsyncTcpClient(HOST, port) as client:
        await client.write_event(Detect(names=names).event())
        await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
        step = 1024 * width * channels
        for i in range(0, len(pcm), step):
            chunk = AudioChunk(rate=rate, width=width, channels=channels, audio=pcm[i : i + step])
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        seen = {"detections": [], "not_detected": False}
        while True:
            try:
                event = await asyncio.wait_for(client.read_event(), timeout=2.0)
            except asyncio.TimeoutError:
                return seen
            if event is None:
                return seen
            if Detection.is_type(event.type):
                d = Detection.from_event(event)
                seen["detections"].append({"name": d.name, "timestamp": d.timestamp})
            elif NotDetected.is_type(event.type):
                seen["not_detected"] = True
                return seen


async def main():
    port = int(sys.argv[1])
    out = {}
    async with AsyncTcpClient(HOST, port) as client:
        await client.write_event(Describe().event())
        while True:
            event = await client.read_event()
            if Info.is_type(event.type):
                wake = Info.from_event(event).wake[0]
                out["info"] = {"program": wake.name, "models": [m.name for m in wake.models]}
                break
    out["streams"] = [await stream(port, spec) for spec in sys.argv[2:]]
    out["only_mycroft"] = await stream(port, sys.argv[2], names=["hey_mycroft"])
    print(json.dumps(out))


asyncio.run(main())
