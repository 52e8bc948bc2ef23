"""The broker's HTTP endpoints: liveness, readiness and Prometheus metrics, whose counters
move when messages flow (parsed with the official Prometheus client's parser)."""

from __future__ import annotations

import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import brokers

pytestmark = pytest.mark.alicia_only("alicia's HTTP endpoints")


def get(url: str) -> tuple[int, str, str]:
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=5) as r:
        body = r.read().decode()
        assert time.monotonic() - started < 0.5
        return r.status, r.headers.get("Content-Type", ""), body


def samples(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = s.value
    return out


def test_health_ready_and_metrics(tmp_path):
    http_port = brokers.free_port()
    x = brokers.start_alicia(tmp_path, ["--http", f"127.0.0.1:{http_port}"])
    try:
        # The MQTT listening line comes first; the HTTP endpoint follows it.
        brokers.wait_listening("127.0.0.1", http_port, x.proc, brokers.STARTUP_TIMEOUT)
        base = f"http://127.0.0.1:{http_port}"
        assert get(base + "/health")[0] == 200
        assert get(base + "/ready")[0] == 200
        status, ctype, text = get(base + "/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        before = samples(text)
        assert before["alicia_broker_clients_connected"] == 0
        for i in range(5):
            subprocess.run(["mosquitto_pub", "-h", x.host, "-p", str(x.port), "-t", "m/t", "-m", str(i), "-q", "1"],
                           check=True, timeout=10)
        after = samples(get(base + "/metrics")[2])
        assert after["alicia_broker_messages_received_total"] == before["alicia_broker_messages_received_total"] + 5
        assert after["alicia_broker_received_bytes_total"] > before["alicia_broker_received_bytes_total"]
        assert after["alicia_broker_clients_maximum"] >= 1
    finally:
        x.stop()
