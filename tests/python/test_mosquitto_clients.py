"""The broker driven by Eclipse Mosquitto's command-line clients, mosquitto_pub and
mosquitto_sub (Debian's mosquitto-clients), in MQTT 3.1.1 and 5.0."""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import threading
import time

import pytest

from pahoclient import V5, V311, prop, publish_props, unique_id

pytestmark = pytest.mark.skipif(
    not (shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub")),
    reason="mosquitto-clients not installed (scripts/test.sh installs it)")

VERSIONS = [pytest.param("mqttv311", id="v311"), pytest.param("mqttv5", id="v5")]
FORMAT = "MSG>%t|%q|%r|%p"
V5_FORMAT = "MSG>%t|%q|%r|C=%C|D=%D|E=%E|P=%P|R=%R|S=%S|%p"


def conn_args(broker, version):
    return ["-h", broker.host, "-p", str(broker.port), "-V", version]


def pub(broker, version, *args, stdin: bytes | None = None, timeout: float = 10):
    out = subprocess.run(["mosquitto_pub", *conn_args(broker, version), *args], input=stdin,
                         capture_output=True, timeout=timeout)
    assert out.returncode == 0, f"mosquitto_pub {args} failed: {out.stderr!r}"
    return out


def sub_once(broker, version, *args, timeout: float = 10):
    """Run mosquitto_sub to completion (it must be bounded by -C/-W/-E)."""
    return subprocess.run(["mosquitto_sub", *conn_args(broker, version), *args],
                          capture_output=True, timeout=timeout)


def parse(stdout: bytes) -> list[list[str]]:
    return [line[4:].split("|") for line in stdout.decode().splitlines()
            if line.startswith("MSG>")]


class LiveSub:
    """A running mosquitto_sub; start() returns once its SUBACK arrived (from -d output)."""

    def __init__(self, broker, version, *args):
        # stdbuf: line-buffer its stdout so the debug lines arrive while it runs.
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", "mosquitto_sub", "-d", *conn_args(broker, version), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.lines: queue.Queue = queue.Queue()
        self.all: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw_line in self.proc.stdout:
            self.lines.put(raw_line.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def wait_subscribed(self, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise AssertionError(f"mosquitto_sub not subscribed within {timeout}s: "
                                     f"{self.all}") from None
            if line is None:
                raise AssertionError(f"mosquitto_sub exited: {self.all} "
                                     f"{self.proc.stderr.read()!r}")
            self.all.append(line)
            if line.startswith("Subscribed"):
                return self

    def finish(self, timeout: float = 10.0) -> tuple[int, list[list[str]]]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"mosquitto_sub still running after {timeout}s: "
                                 f"{self.all}") from None
        while True:
            line = self.lines.get(timeout=5)
            if line is None:
                break
            self.all.append(line)
        msgs = [line[4:].split("|") for line in self.all if line.startswith("MSG>")]
        return code, msgs

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(5)


@pytest.fixture
def live_subs():
    subs: list[LiveSub] = []
    yield subs
    for s in subs:
        s.kill()
        s.proc.stdout.close()
        s.proc.stderr.close()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_pub_sub_round_trip(broker, live_subs, version, qos):
    topic = f"cli/{unique_id()}"
    s = LiveSub(broker, version, "-t", topic, "-q", str(qos), "-C", "3", "-W", "10",
                "-F", FORMAT)
    live_subs.append(s)
    s.wait_subscribed()
    pub(broker, version, "-t", topic, "-q", str(qos), "-l", stdin=b"one\ntwo\nthree\n")
    code, msgs = s.finish()
    assert code == 0
    assert msgs == [[topic, str(qos), "0", p] for p in ("one", "two", "three")]


@pytest.mark.parametrize("version", VERSIONS)
def test_qos_downgraded_to_subscription(broker, live_subs, version):
    s = LiveSub(broker, version, "-t", "cli/down", "-q", "1", "-C", "1", "-W", "10",
                "-F", FORMAT)
    live_subs.append(s)
    s.wait_subscribed()
    pub(broker, version, "-t", "cli/down", "-q", "2", "-m", "x")
    assert s.finish()[1] == [["cli/down", "1", "0", "x"]]


@pytest.mark.parametrize("version", VERSIONS)
def test_wildcard_subscriptions(broker, live_subs, version):
    s = LiveSub(broker, version, "-t", "cliw/+/temp", "-t", "cliw/kitchen/#", "-q", "1",
                "-C", "3", "-W", "10", "-F", FORMAT)
    live_subs.append(s)
    s.wait_subscribed()
    for topic in ("cliw/hall/temp", "cliw/hall/humidity", "cliw/kitchen/light/on",
                  "cliw/kitchen"):
        pub(broker, version, "-t", topic, "-q", "1", "-m", topic)
    code, msgs = s.finish()
    assert code == 0
    assert sorted(m[0] for m in msgs) == ["cliw/hall/temp", "cliw/kitchen",
                                          "cliw/kitchen/light/on"]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained(broker, version):
    pub(broker, version, "-t", "cli/ret", "-q", "1", "-r", "-m", "kept")
    out = sub_once(broker, version, "-t", "cli/ret", "-q", "1", "-C", "1", "-W", "5",
                   "-F", FORMAT)
    assert out.returncode == 0, out.stderr
    assert parse(out.stdout) == [["cli/ret", "1", "1", "kept"]]
    # -n sends a zero-length retained message: the retained message is deleted.
    pub(broker, version, "-t", "cli/ret", "-q", "1", "-r", "-n")
    out = sub_once(broker, version, "-t", "cli/ret", "--retained-only", "-W", "1",
                   "-F", FORMAT)
    assert parse(out.stdout) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session_queue(broker, version):
    cid = unique_id("clips")
    session = ["-c", "-i", cid, "-q", "1", "-t", "cli/ps"]
    if version == "mqttv5":
        session += ["-x", "300"]
    out = sub_once(broker, version, *session, "-E")
    assert out.returncode == 0, out.stderr
    pub(broker, version, "-t", "cli/ps", "-q", "1", "-l", stdin=b"a\nb\nc\n")
    out = sub_once(broker, version, *session, "-C", "3", "-W", "5", "-F", FORMAT)
    assert out.returncode == 0, out.stderr
    assert [m[3] for m in parse(out.stdout)] == ["a", "b", "c"]


def test_v5_properties_from_mosquitto_pub_to_paho(broker, client):
    s = client(V5)
    s.subscribe("cli/props", 1)
    pub(broker, "mqttv5", "-t", "cli/props", "-q", "1", "-m", "req",
        "-D", "publish", "user-property", "room", "kitchen",
        "-D", "publish", "content-type", "text/plain",
        "-D", "publish", "response-topic", "cli/reply",
        "-D", "publish", "correlation-data", "c-1",
        "-D", "publish", "payload-format-indicator", "1",
        "-D", "publish", "message-expiry-interval", "60")
    m = s.get()
    assert m.payload == b"req"
    assert prop(m, "UserProperty") == [("room", "kitchen")]
    assert prop(m, "ContentType") == "text/plain"
    assert prop(m, "ResponseTopic") == "cli/reply"
    assert prop(m, "CorrelationData") == b"c-1"
    assert prop(m, "PayloadFormatIndicator") == 1
    assert 58 <= prop(m, "MessageExpiryInterval") <= 60


def test_v5_properties_from_paho_to_mosquitto_sub(broker, client, live_subs):
    s = LiveSub(broker, "mqttv5", "-t", "cli/p2", "-q", "1", "-C", "1", "-W", "10",
                "-D", "subscribe", "subscription-identifier", "9", "-F", V5_FORMAT)
    live_subs.append(s)
    s.wait_subscribed()
    p = client(V5)
    p.publish("cli/p2", b"resp", qos=1, properties=publish_props(
        ContentType="text/x", CorrelationData=b"cd", ResponseTopic="r/t",
        UserProperty=[("k", "v")], MessageExpiryInterval=60))
    code, msgs = s.finish()
    assert code == 0
    (m,) = msgs
    assert m[:3] == ["cli/p2", "1", "0"] and m[-1] == "resp"
    fields = dict(f.split("=", 1) for f in m[3:-1])
    assert fields["C"] == "text/x" and fields["D"] == "cd" and fields["R"] == "r/t"
    assert fields["P"] == "k:v" and fields["S"] == "9"
    assert 58 <= int(fields["E"]) <= 60


@pytest.mark.parametrize("version", VERSIONS)
def test_paho_and_cli_interoperate(broker, client, live_subs, version):
    protocol = V5 if version == "mqttv5" else V311
    s = LiveSub(broker, version, "-t", "cli/x", "-q", "2", "-C", "1", "-W", "10",
                "-F", FORMAT)
    live_subs.append(s)
    s.wait_subscribed()
    paho_sub = client(protocol)
    paho_sub.subscribe("cli/y", 2)
    client(protocol).publish("cli/x", b"paho to cli", qos=2)
    pub(broker, version, "-t", "cli/y", "-q", "2", "-m", "cli to paho")
    assert s.finish()[1] == [["cli/x", "2", "0", "paho to cli"]]
    assert paho_sub.get().payload == b"cli to paho"


def test_large_payload_from_file(broker, client, tmp_path):
    data = bytes(i * 7 % 256 for i in range(200_000))
    f = tmp_path / "payload.bin"
    f.write_bytes(data)
    s = client(V5)
    s.subscribe("cli/file", 1)
    pub(broker, "mqttv5", "-t", "cli/file", "-q", "1", "-f", str(f))
    assert s.get().payload == data


@pytest.mark.parametrize("version", VERSIONS)
def test_will_of_killed_mosquitto_sub(broker, client, live_subs, version):
    w = client(V5 if version == "mqttv5" else V311)
    w.subscribe("cli/will", 1)
    s = LiveSub(broker, version, "-t", "cli/nothing", "--will-topic", "cli/will",
                "--will-payload", "sub died", "--will-qos", "1")
    live_subs.append(s)
    s.wait_subscribed()
    s.kill(signal.SIGKILL)  # the kernel closes the socket: no DISCONNECT
    assert w.get().payload == b"sub died"


@pytest.mark.parametrize("version", VERSIONS)
def test_no_will_after_clean_exit(broker, client, version):
    w = client(V5 if version == "mqttv5" else V311)
    w.subscribe("cli/will2", 1)
    out = sub_once(broker, version, "-t", "cli/nothing", "-E", "--will-topic", "cli/will2",
                   "--will-payload", "should not appear")
    assert out.returncode == 0, out.stderr
    w.assert_no_message(0.5)
