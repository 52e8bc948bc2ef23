"""Fixtures for the black-box broker tests.

`broker` is a fresh broker per test (alicia by default; `TEST_BROKER=mosquitto` runs the same
tests against Debian's mosquitto to validate the tests themselves). `make_broker(...)` starts
one with options. `client(...)` makes connected paho clients; `raw(...)` opens raw sockets.
Every broker is checked to still be running at teardown, so a crash fails the test.
"""

from __future__ import annotations

import signal

import pytest

import brokers
import mqttraw
from pahoclient import ClientFactory

TEST_TIMEOUT = 30  # seconds; a hard bound on every test


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "alicia_only(reason): feature mosquitto 2.0.11 lacks; skipped under it")
    config.addinivalue_line("markers", "mosquitto_only(reason): checks mosquitto specifics")
    config.addinivalue_line("markers", "timeout(seconds): this test's bound instead of TEST_TIMEOUT")


def pytest_report_header(config):
    if brokers.BROKER_KIND == "alicia":
        return f"broker under test: alicia ({brokers.alicia_bin()})"
    return "broker under test: mosquitto (/usr/sbin/mosquitto)"


def pytest_runtest_setup(item):
    marker = item.get_closest_marker("alicia_only")
    if marker and brokers.BROKER_KIND != "alicia":
        reason = marker.args[0] if marker.args else "alicia only"
        pytest.skip(f"not supported by mosquitto 2.0.11: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Fail any test that runs longer than TEST_TIMEOUT (or its own `timeout` marker's bound)
    instead of hanging the suite."""
    marker = item.get_closest_marker("timeout")
    bound = int(marker.args[0]) if marker and marker.args else TEST_TIMEOUT

    def on_alarm(signum, frame):
        raise TimeoutError(f"test exceeded {bound}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(bound)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def make_broker(tmp_path):
    started: list[brokers.RunningBroker] = []

    def start(**options) -> brokers.RunningBroker:
        if options.get("deny_subscribe") and brokers.BROKER_KIND != "alicia":
            pytest.skip("--deny-subscribe is alicia's option")
        workdir = tmp_path / f"broker{len(started)}"
        workdir.mkdir()
        b = brokers.start_broker(workdir, **options)
        started.append(b)
        return b

    yield start
    crashed = []
    for b in started:
        if not b.alive():
            crashed.append(f"{b.kind} exited with {b.proc.returncode} during the test; "
                           f"log:\n{b.log()}")
        b.stop()
    if crashed:
        pytest.fail("\n".join(crashed))


@pytest.fixture
def broker(make_broker):
    return make_broker()


@pytest.fixture
def client(broker):
    factory = ClientFactory(broker)
    yield factory
    factory.close_all()


@pytest.fixture
def raw(broker):
    opened: list[mqttraw.RawClient] = []

    def open_raw(version: int = 4, target=None) -> mqttraw.RawClient:
        b = target or broker
        c = mqttraw.RawClient(b.host, b.port, version)
        opened.append(c)
        return c

    yield open_raw
    for c in opened:
        c.close()


@pytest.fixture(params=[4, 5], ids=["v311", "v5"])
def version(request):
    """Protocol level: 4 = MQTT 3.1.1, 5 = MQTT 5.0."""
    return request.param


@pytest.fixture
def protocol(version):
    """The same, as paho's protocol constant."""
    from pahoclient import V5, V311
    return V5 if version == 5 else V311
