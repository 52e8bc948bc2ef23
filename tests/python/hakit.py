"""A real Home Assistant Core, installed, started and driven by tests.

Home Assistant is installed once by scripts/install-ha.sh into a venv outside the repository
(`ALICIA_HA_VENV`, default ~/.cache/alicia/ha-venv). Each `HomeAssistant` is a `hass` process with
its own configuration directory, HTTP port and log, that makes no connections outside this host:

- `start()` writes a minimal configuration.yaml (see CONFIGURATION) and waits until HA answers;
- `onboard()` creates the owner account over REST, as the frontend would, and keeps a long-lived
  access token for every later call;
- `add_mqtt(...)` adds the MQTT integration through the config-flow API, plain or TLS, MQTT
  3.1.1 (HA's default) or 5;
- REST helpers (`states`, `state`, `call_service`) and deadline-bound waits (`wait_for_state`,
  `wait_gone`, ...), no fixed sleeps;
- `ws()` opens a WebSocket API client (`HAWebSocket`: `call`, `subscribe_events`, `next_event`,
  `call_service`, `get_states`).

The pytest fixtures (`ha_install`, `make_ha`, `make_module_ha`) and the hook that puts HA's log
into a failing test's report are in hakit_plugin.py.

Facts about HA 2024.3 these helpers rely on are in the docstrings where they matter, and in
tests/python/test_ha_harness.py's header.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import websocket  # websocket-client

import brokers

REPO = brokers.REPO
HA_VERSION = "2024.3.3"
SKIP_ENV = "ALICIA_SKIP_HA_TESTS"
INSTALL_SCRIPT = REPO / "scripts" / "install-ha.sh"

START_TIMEOUT = 90.0  # seconds; ~1.5 s on an idle machine, the rest is for a loaded one
STOP_TIMEOUT = 30.0
WAIT = 10.0  # default deadline of the wait_* helpers
LOG_TAIL = 30_000  # characters of HA's log put into a failing test's report

# The configuration every instance gets. Deliberately not `default_config:`, whose integrations
# reach outside hosts or the LAN, or cost start time for nothing a test needs:
#   cloud (Nabu Casa servers), homeassistant_alerts (fetches alerts.home-assistant.io),
#   mobile_app (cloud webhooks), zeroconf and ssdp (mDNS / UPnP multicast on the LAN),
#   dhcp (sniffs DHCP packets), bluetooth and usb (scan the host's adapters),
#   recorder, history, logbook, energy (an SQLite database written all the time),
#   stream (ffmpeg), assist_pipeline and conversation (speech; Alicia's voice tests use Wyoming),
#   map, media_source, my, sun, webhook (nothing to test here).
# What remains is what the tests use: the HTTP server on loopback, the REST and WebSocket APIs,
# config flows (`config`), onboarding. HA always adds its DEFAULT_INTEGRATIONS (frontend,
# automation, person, backup, ...), none of which connect anywhere. Onboarding's core_config
# step is never posted: finishing it sets up google_translate, met (api.met.no), radio_browser
# and shopping_list. scripts/install-ha.sh installs the requirements of exactly these
# integrations (its HAKIT_INTEGRATIONS lists the ones named here).
CONFIGURATION = """\
homeassistant:
  name: Alicia test home
  latitude: 52.37
  longitude: 4.89
  elevation: 0
  unit_system: metric
  currency: EUR
  country: NL
  time_zone: UTC
  internal_url: "http://127.0.0.1:{port}"
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
onboarding:
websocket_api:
logger:
  default: info
  logs:
    # every MQTT message HA receives and sends, and what discovery made of it
    homeassistant.components.mqtt: debug
"""


class HAError(AssertionError):
    """A request Home Assistant refused, or a wait that ran out; the message says which."""


def venv_path() -> Path:
    return Path(os.environ.get("ALICIA_HA_VENV") or Path.home() / ".cache" / "alicia" / "ha-venv")


def install() -> Path:
    """Runs scripts/install-ha.sh (idempotent; well under a second when installed) and returns
    the venv. Its progress goes to this process's stderr."""
    out = subprocess.run(["bash", str(INSTALL_SCRIPT)], stdout=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{INSTALL_SCRIPT} failed with {out.returncode} (its output is above)")
    venv = Path(out.stdout.strip().splitlines()[-1])
    if not (venv / "bin" / "hass").exists():
        raise RuntimeError(f"{INSTALL_SCRIPT} printed {venv}, which has no bin/hass")
    return venv


def wait_until(check: Callable[[], Any], timeout: float, what: str,
               describe: Callable[[], str] | None = None) -> Any:
    """Calls `check` until it returns something truthy (returned) or `timeout` runs out (HAError
    naming `what`, and what `describe()` says about the last state). Polls every 50 ms at
    first, backing off to 250 ms."""
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f"; {describe()}" if describe else ""
            raise HAError(f"not {what} within {timeout}s{detail}")
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, 0.25)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _multipart(field_name: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field_name}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass
class MqttEntry:
    """The MQTT integration's config entry, as the flow created it."""
    entry_id: str
    title: str
    state: str
    data: dict = field(default_factory=dict)


class HomeAssistant:
    """One `hass` process in `workdir` (configuration in workdir/config, console log in
    workdir/hass.log, temporary files in workdir/tmp)."""

    _live: list["HomeAssistant"] = []  # running instances, for the failure report

    def __init__(self, venv: Path, workdir: Path, name: str = "ha"):
        self.venv = venv
        self.workdir = workdir
        self.name = name
        self.config_dir = workdir / "config"
        self.log_path = workdir / "hass.log"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.token: str | None = None
        self.user: tuple[str, str] | None = None
        self.mqtt: MqttEntry | None = None
        self.start_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # Process ------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> "HomeAssistant":
        """Starts hass and returns once its HTTP API answers. Retries on a new port if the one
        picked was taken meanwhile."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        for attempt in range(3):
            self.port = _free_port()
            (self.config_dir / "configuration.yaml").write_text(CONFIGURATION.format(port=self.port))
            env = dict(os.environ)
            # The MQTT integration writes the broker's CA to $TMPDIR/home-assistant-mqtt/: one
            # TMPDIR per instance keeps parallel instances' certificates apart.
            env["TMPDIR"] = str(self.workdir / "tmp")
            env.pop("PYTHONPATH", None)
            started = time.monotonic()
            log = open(self.log_path, "ab")
            log.write(f"==== hakit: starting hass on port {self.port} ====\n".encode())
            log.flush()
            # --skip-pip: never install an integration's requirements at run time (from the
            # network); scripts/install-ha.sh installed them all.
            self.proc = subprocess.Popen(
                [str(self.venv / "bin" / "hass"), "--config", str(self.config_dir), "--skip-pip",
                 "--log-no-color"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=self.workdir)
            log.close()
            HomeAssistant._live.append(self)
            try:
                wait_until(self._answers, timeout, f"answering on {self.url}",
                           lambda: f"log:\n{self.log()[-LOG_TAIL:]}")
            except HAError:
                exited = self.proc.poll() is not None
                self.stop()
                if exited and attempt < 2 and "Failed to create HTTP server" in self.log():
                    continue  # the port was taken between probing and binding
                raise
            self.start_seconds = time.monotonic() - started
            return self
        raise HAError("unreachable")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise HAError(f"hass exited with {self.proc.returncode}; log:\n{self.log()[-LOG_TAIL:]}")
        try:
            status, _ = self.request("GET", "/api/onboarding", auth=False, timeout=2)
            return status == 200
        except (OSError, HAError):
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (HA's own clean shutdown: it disconnects from the broker, saves .storage),
        SIGKILL if it takes longer than `timeout`. Returns the exit code."""
        if self in HomeAssistant._live:
            HomeAssistant._live.remove(self)
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> int:
        """SIGKILL: a crash, or a power cut. The broker sees the connection drop and publishes
        HA's will (homeassistant/status = offline)."""
        if self in HomeAssistant._live:
            HomeAssistant._live.remove(self)
        self.proc.kill()
        return self.proc.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def rss_bytes(self) -> int:
        """Resident memory of the hass process."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def outside_connections(self) -> list[str]:
        """Remote addresses of the process's TCP and UDP sockets that are not on loopback: the
        evidence that the configuration reaches nowhere else."""
        inodes = set()
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        found = []
        for proto in ("tcp", "tcp6", "udp", "udp6"):
            try:
                lines = Path(f"/proc/{self.proc.pid}/net/{proto}").read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                cols = line.split()
                remote, inode = cols[2], cols[9]
                if inode not in inodes:
                    continue
                addr, port = remote.rsplit(":", 1)
                if int(port, 16) == 0 or set(addr) == {"0"}:
                    continue  # listening or unconnected
                if proto.endswith("6"):
                    loopback = addr in ("00000000000000000000000001000000",) or \
                        addr.startswith("0000000000000000FFFF0000") and addr.endswith("7F")
                else:
                    loopback = addr.endswith("7F")  # 127.x.x.x, little-endian
                if not loopback:
                    found.append(f"{proto} {remote}")
        return found

    # HTTP ---------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, auth: bool = True,
                form: dict | None = None, raw: tuple[bytes, str] | None = None,
                timeout: float = 15, expect: tuple[int, ...] | None = (200, 201)) -> tuple[int, Any]:
        """One HTTP request to HA's API; JSON in (body) or a form / raw body; returns (status,
        decoded JSON or text). A status outside `expect` raises HAError with HA's answer."""
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif raw is not None:
            data, headers["Content-Type"] = raw
        if auth:
            if not self.token:
                raise HAError("not onboarded: no access token yet")
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode(errors="replace")
        try:
            value = json.loads(text) if text else None
        except ValueError:
            value = text
        if expect is not None and status not in expect:
            raise HAError(f"{method} {path} answered {status}: {text[:2000]}")
        return status, value

    def get(self, path: str, **kw) -> Any:
        return self.request("GET", path, **kw)[1]

    def post(self, path: str, body: Any = None, **kw) -> Any:
        return self.request("POST", path, body, **kw)[1]

    # Onboarding ---------------------------------------------------------------------------

    def onboard(self, username: str = "alicia-test") -> str:
        """Creates the owner account (`POST /api/onboarding/users` answers an auth code, which
        `POST /auth/token` exchanges for an access token), then a long-lived access token over
        the WebSocket API, which every later request uses. The core_config, analytics and
        integration steps stay undone: HA works without them (see CONFIGURATION). Returns the
        long-lived token."""
        password = secrets.token_urlsafe(18)
        client_id = self.url + "/"
        code = self.post("/api/onboarding/users", {
            "client_id": client_id, "name": "Alicia Test", "username": username,
            "password": password, "language": "en"}, auth=False)["auth_code"]
        tokens = self.post("/auth/token", form={
            "grant_type": "authorization_code", "code": code, "client_id": client_id}, auth=False)
        self.user = (username, password)
        self.token = tokens["access_token"]
        with self.ws() as ws:
            self.token = ws.call("auth/long_lived_access_token", client_name="alicia-tests",
                                 lifespan=30)
        wait_until(lambda: self.get("/api/config")["state"] == "RUNNING", WAIT, "RUNNING")
        return self.token

    # MQTT integration -----------------------------------------------------------------------

    def add_mqtt(self, host: str, port: int, username: str | None = None,
                 password: str | None = None, *, protocol: str | None = None,
                 ca_file: Path | None = None, tls_insecure: bool = False,
                 client_id: str | None = None, transport: str | None = None,
                 ws_path: str = "/", wait_connected: bool = True) -> MqttEntry:
        """Adds the MQTT integration through the config flow, as the UI does:
        `POST /api/config/config_entries/flow {"handler": "mqtt"}`, then the `broker` form
        (broker, port, username, password). HA tries the connection before it creates the entry;
        a refused one comes back as the form again with errors.base = cannot_connect (HAError).

        Anything beyond the basic form goes through HA 2024.3's "advanced options": the flow is
        started with show_advanced_options, the basic form is posted with advanced_options =
        true, which returns a second form with client_id, keepalive, client_cert, set_ca_cert
        (off / auto / custom), tls_insecure, protocol ("3.1", "3.1.1" = default, "5") and
        transport (tcp / websockets). With set_ca_cert = custom HA shows the form once more with
        a `certificate` field, which takes the id of a file uploaded to /api/file_upload.
        `tls_insecure` skips the host name check (the CA is still verified)."""
        basic = {"broker": host, "port": port}
        if username is not None:
            basic["username"] = username
        if password is not None:
            basic["password"] = password
        advanced = (protocol is not None or ca_file is not None or tls_insecure or client_id
                    or transport is not None)
        flow = self.post("/api/config/config_entries/flow",
                         {"handler": "mqtt", "show_advanced_options": bool(advanced)})
        if flow.get("type") == "abort":
            raise HAError(f"MQTT flow aborted: {flow.get('reason')}")
        flow_id = flow["flow_id"]
        step = f"/api/config/config_entries/flow/{flow_id}"
        if not advanced:
            result = self.post(step, basic)
        else:
            form = self.post(step, {**basic, "advanced_options": True})
            self._expect_form(form, "advanced options")
            values = dict(basic)
            if protocol is not None:
                values["protocol"] = protocol
            if client_id:
                values["client_id"] = client_id
            if tls_insecure:
                values["tls_insecure"] = True
            if ca_file is not None:
                values["set_ca_cert"] = "custom"
            if transport is not None:
                values["transport"] = transport
            # HA answers with the form again as long as a field it now shows (certificate after
            # set_ca_cert = custom, ws_path after transport = websockets) is still missing.
            for _ in range(3):
                result = self.post(step, values)
                if result.get("type") != "form" or result.get("errors"):
                    break
                names = {f["name"] for f in result["data_schema"]}
                if ca_file is not None and "certificate" in names and "certificate" not in values:
                    upload = self.post("/api/file_upload",
                                       raw=_multipart("file", "ca.crt", Path(ca_file).read_bytes()))
                    values["certificate"] = upload["file_id"]
                elif transport == "websockets" and "ws_path" in names and "ws_path" not in values:
                    values["ws_path"] = ws_path
                else:
                    break
        if result.get("type") != "create_entry":
            raise HAError(f"MQTT flow did not create an entry: {json.dumps(result)[:2000]}\n"
                          f"log:\n{self.log()[-LOG_TAIL:]}")
        entry = result["result"]
        self.mqtt = MqttEntry(entry["entry_id"], entry["title"], entry["state"])
        if wait_connected:
            self.wait_mqtt_connected()
        return self.mqtt

    @staticmethod
    def _expect_form(result: dict, what: str) -> None:
        if result.get("type") != "form" or result.get("errors"):
            raise HAError(f"expected the MQTT flow's form with {what}, got {json.dumps(result)[:2000]}")

    def wait_mqtt_connected(self, timeout: float = WAIT) -> None:
        """The entry is `loaded` once set up, before the client connected. The MQTT client logs
        "Connected to MQTT server" in its on_connect (debug level, which CONFIGURATION
        enables), so the log is the authority here."""
        entry = self.mqtt.entry_id
        wait_until(lambda: self.config_entry(entry)["state"] == "loaded", timeout, "MQTT entry loaded",
                   lambda: f"entry {self.config_entry(entry)}")
        wait_until(lambda: "Connected to MQTT server" in self.log(), timeout,
                   "connected to the broker", lambda: f"log:\n{self.log()[-LOG_TAIL:]}")

    def config_entry(self, entry_id: str) -> dict:
        for e in self.get("/api/config/config_entries/entry"):
            if e["entry_id"] == entry_id:
                return e
        raise HAError(f"no config entry {entry_id}")

    def reload_mqtt(self) -> None:
        """Unloads and sets up the MQTT entry again: HA disconnects and reconnects, as after a
        restart (it publishes its birth message again and resubscribes)."""
        self.post(f"/api/config/config_entries/entry/{self.mqtt.entry_id}/reload")

    # States and services ------------------------------------------------------------------

    def states(self) -> list[dict]:
        return self.get("/api/states")

    def state(self, entity_id: str) -> dict | None:
        status, value = self.request("GET", f"/api/states/{entity_id}", expect=(200, 404))
        return value if status == 200 else None

    def wait_for_entity(self, entity_id: str, timeout: float = WAIT) -> dict:
        """Waits until the entity exists (has a state) and returns it."""
        return wait_until(lambda: self.state(entity_id), timeout, f"{entity_id} present",
                          lambda: f"entities: {sorted(s['entity_id'] for s in self.states())}")

    def wait_for_state(self, entity_id: str, state: str | None = None, *,
                       attributes: dict | None = None,
                       predicate: Callable[[dict], bool] | None = None,
                       timeout: float = WAIT) -> dict:
        """Waits until the entity's state equals `state`, its attributes include `attributes`,
        and `predicate(state_dict)` holds (each when given); returns the state dict."""
        last: list[dict | None] = [None]

        def check():
            s = last[0] = self.state(entity_id)
            if s is None:
                return None
            if state is not None and s["state"] != state:
                return None
            if attributes and any(s["attributes"].get(k) != v for k, v in attributes.items()):
                return None
            if predicate is not None and not predicate(s):
                return None
            return s

        want = {"state": state, "attributes": attributes}
        return wait_until(check, timeout, f"{entity_id} at {want}", lambda: f"last: {last[0]}")

    def wait_gone(self, entity_id: str, timeout: float = WAIT) -> None:
        """Waits until the entity has no state and is out of the entity registry."""
        def gone():
            if self.state(entity_id) is not None:
                return False
            with self.ws() as ws:
                return all(e["entity_id"] != entity_id
                           for e in ws.call("config/entity_registry/list"))
        wait_until(gone, timeout, f"{entity_id} removed", lambda: f"state: {self.state(entity_id)}")

    def call_service(self, domain: str, service: str, data: dict | None = None,
                     **fields) -> list[dict]:
        """`POST /api/services/<domain>/<service>` with `data` and `fields` (e.g. entity_id=...);
        returns the states HA reports changed. HA answers once the service handler returned,
        which for MQTT entities means the command was published (QoS 0) or acknowledged."""
        return self.post(f"/api/services/{domain}/{service}", {**(data or {}), **fields})

    def entity_id_for(self, unique_id: str, timeout: float = WAIT) -> str:
        """The entity_id HA gave the entity with this unique_id (for configs without object_id,
        where HA derives the id from the device and entity names)."""
        def find():
            with self.ws() as ws:
                for e in ws.call("config/entity_registry/list"):
                    if e.get("unique_id") == unique_id:
                        return e["entity_id"]
            return None
        return wait_until(find, timeout, f"an entity with unique_id {unique_id}")

    def devices(self) -> list[dict]:
        with self.ws() as ws:
            return ws.call("config/device_registry/list")

    # WebSocket ------------------------------------------------------------------------------

    def ws(self, timeout: float = 10) -> "HAWebSocket":
        return HAWebSocket(f"ws://127.0.0.1:{self.port}/api/websocket", self.token, timeout)


class HAWebSocket:
    """HA's WebSocket API (`/api/websocket`): authenticates on open; `call` sends one command and
    returns its result; events of subscriptions are kept in order for `next_event`."""

    def __init__(self, url: str, token: str, timeout: float = 10):
        self.timeout = timeout
        self.sock = websocket.create_connection(url, timeout=timeout)
        self._next_id = 1
        self.events: list[dict] = []
        hello = self._recv(timeout)
        if hello.get("type") != "auth_required":
            raise HAError(f"WebSocket greeting {hello}")
        self.ha_version = hello.get("ha_version")
        self._send({"type": "auth", "access_token": token})
        answer = self._recv(timeout)
        if answer.get("type") != "auth_ok":
            raise HAError(f"WebSocket authentication: {answer}")

    def __enter__(self) -> "HAWebSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except Exception:  # noqa: BLE001 - teardown
            pass

    def _send(self, message: dict) -> None:
        self.sock.send(json.dumps(message))

    def _recv(self, timeout: float) -> dict:
        self.sock.settimeout(max(0.01, timeout))
        try:
            text = self.sock.recv()
        except websocket.WebSocketTimeoutException:
            raise TimeoutError from None
        return json.loads(text)

    def send(self, type_: str, **fields) -> int:
        """Sends a command without waiting; returns its id."""
        msg_id = self._next_id
        self._next_id += 1
        self._send({"id": msg_id, "type": type_, **fields})
        return msg_id

    def call(self, type_: str, timeout: float | None = None, **fields) -> Any:
        """Sends a command and returns its result; an error result raises HAError."""
        msg_id = self.send(type_, **fields)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                msg = self._recv(deadline - time.monotonic())
            except TimeoutError:
                raise HAError(f"no result for {type_} within {timeout or self.timeout}s") from None
            if msg.get("type") == "event":
                self.events.append(msg)
            elif msg.get("id") == msg_id and msg.get("type") == "result":
                if not msg.get("success"):
                    raise HAError(f"{type_} failed: {msg.get('error')}")
                return msg.get("result")

    def subscribe_events(self, event_type: str | None = None) -> int:
        """Subscribes to one event type (all when None); returns the subscription id, which
        the events carry."""
        fields = {"event_type": event_type} if event_type else {}
        msg_id = self._next_id
        self.call("subscribe_events", **fields)
        return msg_id

    def next_event(self, subscription: int | None = None,
                   predicate: Callable[[dict], bool] | None = None,
                   timeout: float | None = None) -> dict:
        """The next event (its `event` object) of `subscription` (any when None) for which
        `predicate` holds; earlier non-matching events are dropped."""
        deadline = time.monotonic() + (timeout or self.timeout)

        def matches(msg):
            return (subscription is None or msg["id"] == subscription) and \
                (predicate is None or predicate(msg["event"]))

        while True:
            while self.events:
                msg = self.events.pop(0)
                if matches(msg):
                    return msg["event"]
            try:
                msg = self._recv(deadline - time.monotonic())
            except TimeoutError:
                raise HAError(f"no matching event within {timeout or self.timeout}s") from None
            if msg.get("type") == "event":
                self.events.append(msg)

    def call_service(self, domain: str, service: str, service_data: dict | None = None,
                     target: dict | None = None) -> Any:
        fields: dict[str, Any] = {"domain": domain, "service": service}
        if service_data:
            fields["service_data"] = service_data
        if target:
            fields["target"] = target
        return self.call("call_service", **fields)

    def get_states(self) -> list[dict]:
        return self.call("get_states")


# Brokers with passwords, an ACL and optionally TLS -------------------------------------------------

@dataclass
class SecuredBroker:
    """A broker (Debian's Mosquitto or Alicia's) loaded from one mosquitto.conf: a plain listener,
    optionally a TLS one (server certificate for localhost / 127.0.0.1 issued by `ca_file`), a
    password file written by mosquitto_passwd and an ACL file."""
    kind: str
    broker: brokers.RunningBroker
    users: dict[str, str]
    tls_port: int | None = None
    ca_file: Path | None = None
    ws_port: int | None = None

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    def alive(self) -> bool:
        return self.broker.alive()

    def log(self) -> str:
        return self.broker.log()

    def stop(self) -> None:
        self.broker.stop()


def make_test_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for localhost and 127.0.0.1 made with the openssl command.
    Returns (ca.crt, server.crt, server.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
                   "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "3",
         "-subj", "/CN=hakit test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
         "-CAcreateserial", "-out", crt, "-days", "3", "-extfile", ext],
    ):
        subprocess.run([str(c) for c in cmd], check=True, capture_output=True, timeout=30)
    for k in (ca_key, key):
        k.chmod(0o600)
    return ca_crt, crt, key


def start_secured_broker(kind: str, workdir: Path, users: dict[str, str], acl: str,
                         tls: bool = False, websockets: bool = False) -> SecuredBroker:
    """Starts `kind` ("mosquitto" or "alicia") on loopback with only these users (no anonymous
    clients) and this ACL (mosquitto acl_file syntax), plus a TLS listener and a plain MQTT over
    WebSockets one when asked. Both read the same mosquitto.conf."""
    workdir.mkdir(parents=True, exist_ok=True)
    passwd = workdir / "passwd"
    passwd.unlink(missing_ok=True)
    for user, password in users.items():
        create = ["-c"] if not passwd.exists() else []
        subprocess.run(["mosquitto_passwd", *create, "-b", str(passwd), user, password],
                       check=True, capture_output=True, timeout=30)
    passwd.chmod(0o600)
    (workdir / "acl").write_text(acl)
    ca_file = server_crt = server_key = None
    if tls:
        ca_file, server_crt, server_key = make_test_ca(workdir / "certs")

    def conf(port: int, tls_port: int | None, ws_port: int | None) -> Path:
        lines = [f"listener {port} 127.0.0.1"]
        if tls_port is not None:
            lines += [f"listener {tls_port} 127.0.0.1", f"cafile {ca_file}",
                      f"certfile {server_crt}", f"keyfile {server_key}"]
        if ws_port is not None:
            lines += [f"listener {ws_port} 127.0.0.1", "protocol websockets"]
        lines += ["allow_anonymous false", f"password_file {passwd}", f"acl_file {workdir / 'acl'}",
                  "persistence false", "log_dest stderr", "log_type all"]
        if kind == "mosquitto":
            lines.append("user root")  # read the root-owned 0600 files without dropping privileges
        path = workdir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    if kind == "alicia":
        # --port 0 / --tls-port 0 replace the file's first plain and TLS listener ports with
        # free ones, which alicia prints.
        # The WebSockets port is picked here (alicia has no flag for it; a clash fails the start).
        ws_port = _free_port() if websockets else None
        path = conf(1883, 8883 if tls else None, ws_port)
        args = ["-c", str(path)] + (["--tls-port", "0"] if tls else [])
        b = brokers.start_alicia(workdir, args)
        tls_port = None
        for kind_seen in (["mqtts"] if tls else []) + (["ws"] if websockets else []):
            line = brokers._read_line(b.proc, brokers.STARTUP_TIMEOUT)  # noqa: SLF001
            if not line.startswith(f"{kind_seen} listening on 127.0.0.1:"):
                b.stop()
                raise RuntimeError(f"alicia printed {line!r}, not the {kind_seen} listener; "
                                   f"log:\n{b.log()}")
            if kind_seen == "mqtts":
                tls_port = int(line.rsplit(":", 1)[1])
        return SecuredBroker(kind, b, dict(users), tls_port, ca_file, ws_port)
    if kind != "mosquitto":
        raise ValueError(f"unknown broker kind {kind!r}")
    last = None
    for _ in range(5):  # a free port may be taken between probing and binding
        port = _free_port()
        tls_port = _free_port() if tls else None
        ws_port = _free_port() if websockets else None
        path = conf(port, tls_port, ws_port)
        log_path = workdir / "mosquitto.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([brokers.MOSQUITTO, "-c", str(path)], stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL, cwd=workdir)
        b = brokers.RunningBroker("mosquitto", "127.0.0.1", port, proc, log_path)
        try:
            brokers.wait_listening("127.0.0.1", port, proc, brokers.STARTUP_TIMEOUT)
            for extra in (tls_port, ws_port):
                if extra:
                    brokers.wait_listening("127.0.0.1", extra, proc, brokers.STARTUP_TIMEOUT)
            return SecuredBroker(kind, b, dict(users), tls_port, ca_file, ws_port)
        except Exception as e:  # noqa: BLE001
            b.stop(signal.SIGKILL)
            last = f"{e}; log:\n{b.log()}"
    raise RuntimeError(f"mosquitto did not come up: {last}")
