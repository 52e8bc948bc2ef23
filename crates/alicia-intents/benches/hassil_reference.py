#!/usr/bin/env python3
"""Times Home Assistant's own matcher (hassil's recognize_best, as HA's default agent calls
it) on the case the Rust benchmark writes: the same intents JSON, home and utterances.

    flock /work/cpu.lock cargo bench -p alicia-intents --bench matching
    python3 -m pip install hassil      # in a virtual environment
    flock /work/cpu.lock python3 crates/alicia-intents/benches/hassil_reference.py

Slot lists are built like Home Assistant's: {name} values carry the device's domain as
context, {area} and {floor} their names; the satellite's area is the intent context.
hassil has no fuzzy names and no short names without the area ("speaker" for "Kitchen
Speaker"), so it matches fewer of the utterances; the figures compare speed.
"""

import importlib.metadata
import json
import statistics
import sys
import time
from pathlib import Path

from hassil import Intents, TextSlotList, recognize_best

ROUNDS = 20


def main() -> None:
    root = Path(__file__).resolve().parents[3]
    case_path = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "target/intents-bench/case.json"
    case = json.loads(case_path.read_text())
    intents = Intents.from_dict(json.loads(Path(case["intents"]).read_text()))
    area_names = {a["id"]: a["name"] for a in case["areas"]}
    names = []
    for d in case["devices"]:
        for text in [d["name"], *d["aliases"]]:
            names.append((text, d["name"], {"domain": d["domain"]}))
    slot_lists = {
        "name": TextSlotList.from_tuples(names, allow_template=False, name="name"),
        "area": TextSlotList.from_strings(list(area_names.values()), allow_template=False, name="area"),
        "floor": TextSlotList.from_strings([f["name"] for f in case["floors"]], allow_template=False, name="floor"),
    }
    times = []
    matched = 0
    for u in case["utterances"]:
        context = {"area": area_names[u["area"]]} if u["area"] else {}
        for i in range(ROUNDS):
            t = time.perf_counter()
            r = recognize_best(u["text"], intents, slot_lists=slot_lists, intent_context=context, best_slot_name="name")
            times.append(time.perf_counter() - t)
        matched += r is not None
    times.sort()
    pct = lambda p: times[round((len(times) - 1) * p)] * 1e3
    print(
        f"hassil {importlib.metadata.version('hassil')}: {len(case['utterances'])} utterances x {ROUNDS} rounds, "
        f"{len(case['devices'])} devices ({matched} match):\n"
        f"  p50 {pct(0.5):.2f} ms  p90 {pct(0.9):.2f} ms  p99 {pct(0.99):.2f} ms  max {times[-1] * 1e3:.2f} ms  "
        f"mean {statistics.mean(times) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
