"""pytest fixtures and hooks for tests that drive a real Home Assistant (see hakit.py).

Use it from a test module with `pytest_plugins = ("hakit_plugin",)`; it provides:
- `ha_install` (session): the venv with Home Assistant; runs scripts/install-ha.sh, which is quick
  when it is installed. Only `ALICIA_SKIP_HA_TESTS=1` skips the tests that use it.
- `make_ha` (per test) and `make_module_ha` (per module): `start(broker=None, *, name=None,
  onboard=True, **mqtt)` returns a started, onboarded `hakit.HomeAssistant`, with the MQTT
  integration pointed at `broker` (anything with host and port) when given; `mqtt` takes
  `HomeAssistant.add_mqtt`'s keywords. Every instance is stopped at the end of the test or
  module, and one that died on its own fails it.
- A failing test's report gets the part of every running HA's log written while it ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hakit import LOG_TAIL, SKIP_ENV, HomeAssistant, install


@pytest.fixture(scope="session")
def ha_install() -> Path:
    """The venv with Home Assistant, installed if missing. Skipped only when
    ALICIA_SKIP_HA_TESTS=1 says so."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: Home Assistant tests skipped on request")
    return install()


class HAFactory:
    """Starts onboarded HomeAssistant instances (optionally with MQTT pointed at a broker) and
    stops them all at `close()`."""

    def __init__(self, venv: Path, base: Path):
        self.venv = venv
        self.base = base
        self.started: list[HomeAssistant] = []

    def __call__(self, broker=None, *, name: str | None = None, onboard: bool = True,
                 **mqtt) -> HomeAssistant:
        """broker: anything with host and port (a brokers.RunningBroker), or None for no MQTT.
        mqtt: HomeAssistant.add_mqtt's keyword arguments (username, password, protocol, ca_file,
        tls_insecure, client_id, port to override the broker's)."""
        name = name or f"ha{len(self.started)}"
        workdir = self.base / name
        workdir.mkdir(parents=True)
        ha = HomeAssistant(self.venv, workdir, name)
        self.started.append(ha)
        ha.start()
        if onboard:
            ha.onboard()
            if broker is not None:
                port = mqtt.pop("port", broker.port)
                ha.add_mqtt(mqtt.pop("host", broker.host), port, **mqtt)
        return ha

    def close(self) -> list[str]:
        """Stops every instance; returns complaints about ones that died on their own."""
        problems = []
        for ha in self.started:
            if ha.proc is not None and ha.proc.poll() is not None and ha in HomeAssistant._live:
                problems.append(f"{ha.name}: hass exited with {ha.proc.returncode} during the test;"
                                f" log:\n{ha.log()[-LOG_TAIL:]}")
            ha.stop()
        return problems


@pytest.fixture
def make_ha(ha_install, tmp_path):
    factory = HAFactory(ha_install, tmp_path / "ha")
    yield factory
    problems = factory.close()
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture(scope="module")
def make_module_ha(ha_install, tmp_path_factory):
    factory = HAFactory(ha_install, tmp_path_factory.mktemp("ha"))
    yield factory
    problems = factory.close()
    if problems:
        pytest.fail("\n".join(problems))


# A failing test's report gets the part of every running HA's log written while it ran.

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    item._hakit_offsets = {id(ha): ha.log_size() for ha in HomeAssistant._live}
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when not in ("setup", "call") or not report.failed:
        return
    offsets = getattr(item, "_hakit_offsets", {})
    for ha in list(HomeAssistant._live):
        text = ha.log_since(offsets.get(id(ha), 0))
        if len(text) > LOG_TAIL:
            text = "[...]\n" + text[-LOG_TAIL:]
        report.sections.append((f"Home Assistant log ({ha.name}, {ha.workdir})", text))
