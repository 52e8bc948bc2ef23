"""The bus core services of `alicia up`, end to end with real clients: a device (paho-mqtt,
logged in with a gateway token, so under the device ACL `alicia init` writes) registers with
the seed's message, the registry's HTTP API and `alicia devices` show it, its will marks it
offline, and the registry keeps it across a restart."""

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import brokers
from pahoclient import Client
from upkit import device_token, envelope, login, now, up  # noqa: F401 (up is a fixture)

pytestmark = pytest.mark.alicia_only("tests of the alicia binary's services")

REPO = Path(__file__).resolve().parents[2]
REGISTRATION = json.loads((REPO / "docs/examples/envelopes/device_registration.json").read_text())
DEVICE = "sonos_kitchen_001"


def http(method: str, url: str, body=None, auth: str | None = None) -> tuple[int, dict]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def basic(home: Path, user: str = "cli") -> str:
    """HTTP Basic credentials of a service login from the home (the registry's writes need one)."""
    pw = (home / "secrets" / f"{user}.password").read_text().strip()
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


def wait_for(check, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def fresh(envelope: dict) -> dict:
    """The design document's registration with a new id and timestamp, sent as a request to the
    registry (the document's own is an event on the discovery topic: see test_design_document.py)."""
    e = json.loads(json.dumps(envelope))
    e["message_id"] = str(uuid.uuid4())
    e["timestamp"] = now()
    e["source"] = f"device_id:{DEVICE}"
    e["destination"] = "device_registry"
    e["message_type"] = "request"
    return e


def device_client(x, home: Path) -> Client:
    c = Client(x, client_id=DEVICE)
    c.c.username_pw_set(DEVICE, device_token(home, DEVICE))
    c.will_set(f"alicia/devices/{DEVICE}/status", b"offline", qos=1, retain=True)
    c.connect()
    return c


def test_device_registers_and_the_registry_api_shows_it(up):
    home, start = up
    x = start()
    api = f"http://{x.addrs['registry']}"
    dev = device_client(x, home)
    try:
        dev.subscribe(f"alicia/devices/{DEVICE}/command", qos=1)
        registration = fresh(REGISTRATION)
        dev.publish("alicia/system/discovery/register", json.dumps(registration), qos=1)
        # The registration is a request: the registry's signed answer reaches the device's
        # command topic through the router.
        answer = json.loads(dev.get().payload)
        assert answer["message_type"] == "response" and answer["correlation_id"] == registration["message_id"]
        assert answer["payload"]["data"]["status"] == "registered"
        assert answer["security"]["key_id"] == "device_registry" and answer["security"]["signature"]
        found = wait_for(lambda: http("GET", f"{api}/devices/capability/audio_playback")[1]["devices"],
                         "the speaker in the capability index")
        assert [d["device_id"] for d in found] == [DEVICE]
        status, one = http("GET", f"{api}/devices/{DEVICE}")
        assert status == 200 and one["status"] == "online" and one["location"] == "kitchen"
        assert one["endpoints"]["control"] == f"alicia/devices/{DEVICE}/command"

        # The CLI reads the same registry over the bus.
        out = subprocess.run([brokers.alicia_bin(), "devices", "list", "--home", str(home),
                              "--broker", x.addrs["mqtt"]], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert DEVICE in out.stdout and "online" in out.stdout

        # A service addresses the speaker by id and by capability; the router delivers both to
        # its command topic. A malformed envelope ends in the dead-letter topic with the reason.
        svc = login(x, home)
        try:
            svc.subscribe("alicia/system/deadletter", qos=1)
            for dest in (f"device_id:{DEVICE}", "capability:volume_control"):
                command = envelope("cli", dest, "command", {"action": "set_volume", "level": 30}, priority="high")
                svc.publish("alicia/services/router/inbox", json.dumps(command), qos=1)
                got = json.loads(dev.get().payload)
                assert got["message_id"] == command["message_id"] and got["payload"]["data"]["level"] == 30
                assert got["routing"]["hops"] == 1 and got["routing"]["route"] == ["router"]
            svc.publish("alicia/services/router/inbox", b"{not an envelope", qos=1)
            dead = json.loads(svc.get().payload)
            assert dead["reason"] and dead["topic"] == "alicia/services/router/inbox", dead
        finally:
            svc.close()

        # The device dies without a DISCONNECT: its will marks it offline at once.
        dev.drop()
        wait_for(lambda: http("GET", f"{api}/devices/{DEVICE}")[1]["status"] == "offline", "offline by will")
    finally:
        dev.close()

    # HTTP writes need a credential; errors carry a code and a message.
    status, err = http("POST", f"{api}/devices/register", {"device_type": "speaker"})
    assert status == 401 and err["error"] == "unauthorized", err
    status, err = http("POST", f"{api}/devices/register", {"device_type": "speaker"}, auth="Basic Y2xpOm5vcGU=")
    assert status == 401, err
    status, err = http("POST", f"{api}/devices/register", b"{not json", auth=basic(home))
    assert status == 400 and err["message"]
    status, err = http("POST", f"{api}/devices/register", {"device_type": "speaker"}, auth=basic(home))
    assert status == 422 and "device_id" in err["message"]
    status, err = http("GET", f"{api}/devices/nothing_here")
    assert status == 404 and err["error"] == "not_found"

    # The discovery view sees it offline.
    with urllib.request.urlopen(f"http://{x.addrs['discovery']}/discovery", timeout=5) as r:
        view = json.loads(r.read())
    assert DEVICE in json.dumps(view)


def test_registry_survives_a_restart_of_alicia_up(up):
    home, start = up
    x = start()
    api = f"http://{x.addrs['registry']}"
    hall = {"device_id": "hall_sensor", "device_type": "sensor", "name": "Hall", "location": "hall",
            "capabilities": ["temperature"]}
    status, _ = http("POST", f"{api}/devices/register", hall)
    assert status == 401, "writes need a credential"
    # A device's gateway token lets it register itself, not another.
    status, _ = http("POST", f"{api}/devices/register", hall, auth="Bearer " + device_token(home, "kitchen_lamp"))
    assert status == 403
    status, _ = http("POST", f"{api}/devices/register", hall, auth="Bearer " + device_token(home, "hall_sensor"))
    assert status == 201
    assert x.stop() == 0
    x = start()
    api = f"http://{x.addrs['registry']}"
    status, one = http("GET", f"{api}/devices/hall_sensor")
    assert status == 200 and [c["name"] for c in one["capabilities"]] == ["temperature"]
    assert one["status"] == "unknown", "not heard from since the restart"
    status, _ = http("DELETE", f"{api}/devices/hall_sensor")
    assert status == 401
    status, _ = http("DELETE", f"{api}/devices/hall_sensor", auth=basic(home))
    assert status == 200
    status, gone = http("GET", f"{api}/devices/hall_sensor")
    assert status == 404 and "removed" in gone["message"]


def services(home: Path, env: dict, stderr, stdout=subprocess.PIPE) -> subprocess.Popen:
    """`alicia services` of `home` with every HTTP endpoint on a free loopback port."""
    return subprocess.Popen([brokers.alicia_bin(), "services", "--home", str(home), "--http", "127.0.0.1:0",
                             "--registry-http", "127.0.0.1:0", "--discovery-http", "127.0.0.1:0",
                             "--data-store-http", "127.0.0.1:0"],
                            stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env)


def ready(proc: subprocess.Popen) -> dict[str, str]:
    """Reads `KIND listening on ADDR` lines until `alicia ready`; returns KIND -> ADDR."""
    addrs = {}
    while True:
        line = brokers._read_line(proc, brokers.STARTUP_TIMEOUT)
        if line == "alicia ready":
            return addrs
        kind, _, addr = line.partition(" listening on ")
        addrs[kind] = addr


def test_services_run_against_mosquitto_with_alicias_password_and_acl_files(tmp_path):
    """`alicia services` against Debian's Mosquitto (found through ALICIA__MQTT__ overrides of the
    environment file), which enforces the password file and ACL that `alicia init` wrote: the
    registry logs in as itself, a device registers, the HTTP API shows it, and the retained
    inventory is on Mosquitto for anyone allowed to read it."""
    home = tmp_path / "home"
    subprocess.run([brokers.alicia_bin(), "init", str(home)], check=True, capture_output=True, timeout=60)
    m = brokers.start_mosquitto(tmp_path, {"password_file": home / "passwd", "acl_file": home / "acl"})
    log = open(tmp_path / "services.stderr", "wb")
    # The broker comes from the environment's `mqtt` section, overridden by a variable.
    env = {**os.environ, "ALICIA__MQTT__HOST": "127.0.0.1", "ALICIA__MQTT__PORT": str(m.port)}
    proc = services(home, env, log)
    try:
        addrs = ready(proc)
        api = f"http://{addrs['registry']}"
        dev = Client(m, client_id="speaker")
        dev.c.username_pw_set("api", (home / "secrets" / "api.password").read_text().strip())
        dev.connect()
        dev.publish("alicia/system/discovery/register", json.dumps(fresh(REGISTRATION)), qos=1)
        wait_for(lambda: http("GET", f"{api}/devices/{DEVICE}")[0] == 200, "the speaker registered")
        dev.close()
        out = subprocess.run(["mosquitto_sub", "-p", str(m.port), "-u", "cli", "-P",
                              (home / "secrets" / "cli.password").read_text().strip(),
                              "-t", "alicia/system/registry/devices", "-C", "1", "-W", "5"],
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        inventory = json.loads(out.stdout)
        # Besides the speaker, only the voice services, which register as capability providers.
        ids = [d["device_id"] for d in inventory["devices"]]
        assert [i for i in ids if i not in ("stt_service", "tts_service")] == [DEVICE], ids
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        log.close()
        m.stop()


def test_services_reach_mosquitto_over_tls_as_the_environment_file_says(tmp_path):
    """The design document's `mqtt.tls: true`, against Debian's Mosquitto listening only with TLS
    (the home's server certificate, the password file and ACL of `alicia init`): every service
    connects over TLS, checking the broker's certificate against the home's CA, and works (a
    device registers and the registry's HTTP API shows it). A CA that does not match is named
    in the error instead of a silent retry loop."""
    home = tmp_path / "home"
    subprocess.run([brokers.alicia_bin(), "init", str(home)], check=True, capture_output=True, timeout=60)
    certs = home / "certs"
    m = brokers.start_mosquitto(tmp_path, {
        "password_file": home / "passwd", "acl_file": home / "acl",
        "tls": {"cafile": certs / "ca.crt", "certfile": certs / "server.crt", "keyfile": certs / "server.key"},
    })
    env = {**os.environ, "ALICIA__MQTT__HOST": "127.0.0.1", "ALICIA__MQTT__PORT": str(m.port),
           "ALICIA__MQTT__TLS__ENABLED": "true"}
    log = open(tmp_path / "services.stderr", "wb")
    proc = services(home, env, log)
    try:
        addrs = ready(proc)
        api = f"http://{addrs['registry']}"
        dev = Client(m, client_id="speaker")
        dev.c.tls_set(ca_certs=str(certs / "ca.crt"))
        dev.c.username_pw_set("api", (home / "secrets" / "api.password").read_text().strip())
        dev.connect()
        dev.publish("alicia/system/discovery/register", json.dumps(fresh(REGISTRATION)), qos=1)
        wait_for(lambda: http("GET", f"{api}/devices/{DEVICE}")[0] == 200, "the speaker registered over TLS")
        dev.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        log.close()
    # Another CA: the services' log says why they cannot connect (and they keep trying).
    other = tmp_path / "other-ca.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "o.key"),
                    "-out", str(other), "-subj", "/CN=Other CA", "-days", "1"], check=True, capture_output=True)
    env["ALICIA__MQTT__TLS__CA_FILE"] = str(other)
    err_path = tmp_path / "services-other-ca.stderr"
    with open(err_path, "wb") as err:
        proc = services(home, env, err, stdout=subprocess.DEVNULL)
        try:
            wait_for(lambda: "UnknownIssuer" in err_path.read_text(errors="replace"),
                     "the log names the untrusted certificate", timeout=30)
            assert "TLS handshake failed" in err_path.read_text(errors="replace")
        finally:
            proc.terminate()
            proc.wait(10)
            m.stop()
