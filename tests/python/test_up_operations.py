"""Operations through `alicia up`, with real clients: the monitor's /metrics (parsed with the
official Prometheus client) carries the broker's and the system's metrics and its counters move;
a log line matching a rule (a refused login) becomes an alert on the bus; the configuration
service answers and applies updates over the bus, refuses a bad one keeping the old, and keeps
an applied one across a restart."""

import json
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import brokers
from pahoclient import Client, publish_props
from upkit import envelope, login, up  # noqa: F401 (up is a fixture)

pytestmark = pytest.mark.alicia_only("tests of the alicia binary's services")


def metrics(x) -> dict[str, float]:
    started = time.monotonic()
    with urllib.request.urlopen(f"http://{x.addrs['http']}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert time.monotonic() - started < 0.5
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def ask(c: Client, data: dict) -> dict:
    """A request envelope to config_service; the response envelope."""
    reply = f"alicia/services/cli/reply/{c.client_id}"
    c.subscribe(reply, qos=1)
    request = envelope("cli", "config_service", "request", data, ttl=10)
    c.publish("alicia/services/config_service/inbox", json.dumps(request), qos=1,
              properties=publish_props(ResponseTopic=reply, CorrelationData=request["message_id"].encode()))
    while True:
        m = c.get(timeout=10)
        if m.topic == reply:
            answer = json.loads(m.payload)
            assert answer["correlation_id"] == request["message_id"]
            return answer


def announced(c: Client) -> dict:
    """The retained configuration announcement of the development environment."""
    c.subscribe("alicia/system/config/development", qos=1)
    while True:
        m = c.get(timeout=10)
        if m.topic == "alicia/system/config/development":
            c.unsubscribe("alicia/system/config/development")
            return json.loads(m.payload)


def test_metrics_parse_and_move(up):
    home, start = up
    x = start("--env", "development")
    before = metrics(x)
    for name in ("alicia_broker_messages_received_total", "alicia_system_memory_used_bytes",
                 "alicia_system_cpu_usage_ratio", "alicia_monitor_uptime_seconds"):
        assert name in before, name
    password = (home / "secrets" / "cli.password").read_text().strip()
    for i in range(5):
        subprocess.run(["mosquitto_pub", "-p", str(x.port), "-u", "cli", "-P", password, "-t", "alicia/test",
                        "-m", str(i), "-q", "1"], check=True, timeout=10)
    after = metrics(x)
    assert after["alicia_broker_messages_received_total"] >= before["alicia_broker_messages_received_total"] + 5
    with urllib.request.urlopen(f"http://{x.addrs['http']}/ready", timeout=5) as r:
        ready = json.loads(r.read())
    assert r.status == 200 and set(ready["checks"]["services"]["up"]) >= {"router", "device_registry",
                                                                          "config_service"}


def test_a_refused_login_in_the_log_raises_an_alert(up):
    home, start = up
    x = start("--env", "development")
    watcher = login(x, home)
    try:
        watcher.subscribe("alicia/system/alerts", qos=1)
        bad = subprocess.run(["mosquitto_pub", "-p", str(x.port), "-u", "router", "-P", "wrong", "-t", "x",
                              "-m", "y"], capture_output=True, timeout=10)
        assert bad.returncode != 0
        deadline = time.monotonic() + 10
        while True:
            alert = json.loads(watcher.get(timeout=max(0.1, deadline - time.monotonic())).payload)
            if alert["alert"] == "log_connection_refused":
                break
        assert alert["state"] == "firing" and alert["severity"] == "warning"
        assert "bad user name or password" in alert["context"]["line"]
        assert "wrong" not in json.dumps(alert)  # the password never reaches logs or alerts
    finally:
        watcher.close()


def test_configuration_updates_over_the_bus(up):
    home, start = up
    x = start("--env", "development")
    c = login(x, home)
    try:
        got = ask(c, {"op": "get", "section": "router"})
        assert got["message_type"] == "response" and got["payload"]["data"]["values"]["max_hops"] == 8
        version = announced(c)["version"]

        done = ask(c, {"op": "update", "key": "router.max_hops", "value": 4})
        assert done["payload"]["data"]["applied"] is True
        doc = announced(c)
        assert doc["version"] > version and doc["config"]["router"]["max_hops"] == 4

        refused = ask(c, {"op": "update", "key": "router.max_hops", "value": "lots"})
        assert refused["payload"]["metadata"]["status"] == "error", refused
        assert refused["payload"]["data"]["code"] == "invalid_config"
        assert "max_hops" in refused["payload"]["data"]["message"]
        assert announced(c)["config"]["router"]["max_hops"] == 4
    finally:
        c.close()

    # Applied updates survive a restart.
    assert x.stop() == 0
    x = start("--env", "development")
    c = login(x, home)
    try:
        assert ask(c, {"op": "get", "section": "router"})["payload"]["data"]["values"]["max_hops"] == 4
    finally:
        c.close()


def test_a_bad_environment_file_is_named_before_anything_listens(tmp_path):
    home = tmp_path / "home"
    subprocess.run([brokers.alicia_bin(), "init", str(home)], check=True, capture_output=True, timeout=60)
    (home / "config" / "staging.yaml").write_text("router:\n  max_hops: 4\nmqtt:\n  hots: example\n")
    out = subprocess.run([brokers.alicia_bin(), "up", "--home", str(home), "--env", "staging", "--port", "0"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "listening" not in out.stdout
    assert "staging.yaml:4:3" in out.stderr and "hots" in out.stderr, out.stderr
