"""Wyoming client steps the tests share, with the reference implementation (PyPI `wyoming`)."""

from __future__ import annotations


async def describe(host: str, port: int):
    """The server's `info`."""
    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe, Info

    async with AsyncTcpClient(host, port) as client:
        await client.write_event(Describe().event())
        while True:
            e = await client.read_event()
            assert e is not None, "closed before info"
            if Info.is_type(e.type):
                return Info.from_event(e)


async def synthesize(host: str, port: int, text: str) -> tuple[tuple[int, int, int], bytes]:
    """`synthesize` → ((rate, width, channels), the audio's bytes)."""
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize

    async with AsyncTcpClient(host, port) as client:
        await client.write_event(Synthesize(text=text).event())
        fmt, audio = None, bytearray()
        while True:
            e = await client.read_event()
            assert e is not None, "closed before audio-stop"
            if AudioStart.is_type(e.type):
                s = AudioStart.from_event(e)
                fmt = (s.rate, s.width, s.channels)
            elif AudioChunk.is_type(e.type):
                audio += AudioChunk.from_event(e).audio
            elif AudioStop.is_type(e.type):
                return fmt, bytes(audio)
