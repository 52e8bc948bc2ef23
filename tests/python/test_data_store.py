"""The data store of `alicia up`: what the bus says lands in SQLite under <home>/data/, the HTTP
query API finds it, and a crash (SIGKILL of the whole `alicia up`) loses at most the last batch
interval (data_store.batch_interval_ms, 1 s by default): every record published more than one
interval before the kill is in the database, read afterwards with Python's own sqlite3."""

import json
import signal
import sqlite3
import time
import urllib.request

import pytest

from test_up_services import wait_for
from upkit import login, now, up  # noqa: F401 (up is a fixture)

pytestmark = pytest.mark.alicia_only("tests of the alicia binary's data store")

BATCH_INTERVAL = 1.0  # data_store.batch_interval_ms's default, in seconds


def alert(name: str, n: int) -> bytes:
    return json.dumps({"alert": name, "severity": "info", "state": "firing", "service": "test",
                       "message": f"{name} {n}", "since": now(), "context": {"n": n}}).encode()


def query(x, **params) -> dict:
    qs = "&".join(f"{k}={v}" for k, v in params.items())
    with urllib.request.urlopen(f"http://{x.addrs['data-store']}/query?{qs}", timeout=5) as r:
        return json.loads(r.read())


def test_records_survive_kill_9_but_the_last_batch_interval(up):
    home, start = up
    x = start()
    svc = login(x, home)
    try:
        svc.publish("alicia/devices/kitchen_light/state", json.dumps({"power": "on", "updated": now()}),
                    qos=1, retain=True)
        for n in range(50):
            svc.publish("alicia/system/alerts", alert("early", n), qos=1)
        wait_for(lambda: query(x, type="alerts", name="early")["count"] == 50, "the early alerts queryable")
        rows = query(x, type="states", device_id="kitchen_light")["rows"]
        assert rows and rows[0]["state"]["power"] == "on"
        # One more record, then a pause longer than a batch interval: it must be committed.
        svc.publish("alicia/system/alerts", alert("before_pause", 0), qos=1)
        time.sleep(BATCH_INTERVAL * 2.5)
        sent_late = 20
        for n in range(sent_late):
            svc.publish("alicia/system/alerts", alert("late", n), qos=1)
    finally:
        svc.close()
    x.proc.send_signal(signal.SIGKILL)
    x.proc.wait(10)

    db = sqlite3.connect(home / "data" / "data_store.db")
    count = dict(db.execute("SELECT alert, COUNT(*) FROM alerts GROUP BY alert").fetchall())
    assert count.get("early") == 50 and count.get("before_pause") == 1, count
    # The late ones were at most one interval old at the kill: any number of them may be lost.
    assert 0 <= count.get("late", 0) <= sent_late
    print(f"after SIGKILL: {count.get('late', 0)} of {sent_late} records of the last interval kept")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # Restarted, the store opens the same database and goes on.
    x = start()
    assert query(x, type="alerts", name="early")["count"] == 50
