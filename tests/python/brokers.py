"""Start and stop the broker under test: the alicia binary, or Debian's mosquitto.

`TEST_BROKER=alicia` (default) runs `$ALICIA_BIN broker --port 0`; `TEST_BROKER=mosquitto`
runs `/usr/sbin/mosquitto -c CONF` on a free port, which is how the tests themselves are
checked against an independent implementation.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BROKER_KIND = os.environ.get("TEST_BROKER", "alicia")
if BROKER_KIND not in ("alicia", "mosquitto"):
    raise RuntimeError(f"TEST_BROKER must be alicia or mosquitto, not {BROKER_KIND!r}")

# alicia is held to the exact contract; mosquitto 2.0.11 (used to validate the tests) is
# allowed its known gaps: it closes idle connections only ~5 s after a 1 s keep-alive runs
# out, and closes replaced or misbehaving v5 connections without sending a DISCONNECT.
STRICT = BROKER_KIND == "alicia"
KEEPALIVE_1S_CLOSE_WITHIN = 3.0 if STRICT else 8.0

STARTUP_TIMEOUT = 15.0
LISTEN_LINE = re.compile(r"^mqtt listening on 127\.0\.0\.1:(\d+)$")


def alicia_bin() -> str:
    path = os.environ.get("ALICIA_BIN") or str(REPO / "target" / "debug" / "alicia")
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            f"alicia binary not found at {path}: run `cargo build -p alicia` or set ALICIA_BIN")
    return path


@dataclass
class RunningBroker:
    kind: str
    host: str
    port: int
    proc: subprocess.Popen
    log_path: Path
    args: list[str] = field(default_factory=list)
    addrs: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode


# `alicia up` serves more than MQTT; tests never take the fixed default ports.
UP_ADDRESS_FLAGS = {"--tls-port": "0", "--http": "127.0.0.1:0", "--gateway": "127.0.0.1:0",
                    "--gateway-tls": "127.0.0.1:0", "--registry-http": "127.0.0.1:0",
                    "--discovery-http": "127.0.0.1:0", "--data-store-http": "127.0.0.1:0"}
UP_LINE = re.compile(r"^([a-z-]+) listening on (\S+)$")


def start_alicia(workdir: Path, extra_args: list[str] | None = None,
                 subcommand: str = "broker", env: dict | None = None) -> RunningBroker:
    """Starts `alicia broker` (or `alicia up`) on free ports. For `up`, every address flag
    not given is set to a free port, and the start waits for `alicia ready`; `addrs` maps
    each kind (`mqtt`, `http`, `gateway`, `registry`, ...) to its HOST:PORT."""
    extra_args = list(extra_args or [])
    if subcommand == "up":
        for flag, value in UP_ADDRESS_FLAGS.items():
            if flag not in extra_args:
                extra_args += [flag, value]
    args = [alicia_bin(), subcommand, "--bind", "127.0.0.1", "--port", "0", *extra_args]
    log_path = workdir / "alicia.stderr"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log,
                                stdin=subprocess.DEVNULL, cwd=workdir, env=env)
    broker = RunningBroker("alicia", "127.0.0.1", 0, proc, log_path, args)
    try:
        line = _read_line(proc, STARTUP_TIMEOUT)
    except Exception as e:
        broker.stop(signal.SIGKILL)
        raise RuntimeError(f"alicia did not come up ({e}); command {args}; stderr:\n"
                           f"{broker.log()}") from None
    m = LISTEN_LINE.match(line)
    if not m:
        broker.stop(signal.SIGKILL)
        raise RuntimeError(f"alicia printed {line!r} instead of 'mqtt listening on "
                           f"127.0.0.1:PORT'; stderr:\n{broker.log()}")
    broker.port = int(m.group(1))
    assert broker.port != 0
    broker.addrs["mqtt"] = f"127.0.0.1:{broker.port}"
    if subcommand == "up":
        while True:
            try:
                line = _read_line(proc, STARTUP_TIMEOUT)
            except Exception as e:
                broker.stop(signal.SIGKILL)
                raise RuntimeError(f"alicia up did not get ready ({e}); stderr:\n{broker.log()}") from None
            if line == "alicia ready":
                break
            m = UP_LINE.match(line)
            if m:
                broker.addrs[m.group(1)] = m.group(2)
    return broker


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """One line from the child's stdout, without blocking past the deadline. Bytes read past
    the line are kept on `proc` for the next call."""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    buf = getattr(proc, "_line_buf", b"")
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc._line_buf = buf
            raise TimeoutError(f"no listening line on stdout within {timeout}s (got {buf!r})")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            raise RuntimeError(f"process exited with {proc.wait(5)} before printing the "
                               f"listening line (stdout {buf!r})")
        buf += chunk
    line, proc._line_buf = buf.split(b"\n", 1)
    return line.decode(errors="replace").rstrip("\r")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(host: str, port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"not listening on {host}:{port} within {timeout}s")


MOSQUITTO = "/usr/sbin/mosquitto"


def start_mosquitto(workdir: Path, options: dict | None = None) -> RunningBroker:
    """Debian's mosquitto on a free loopback port, anonymous, no persistence (options: a
    password file and ACL, TLS files for the listener, a few limits)."""
    options = options or {}
    last_error = None
    for _ in range(5):  # the free port may be taken between probing and binding
        port = free_port()
        conf = workdir / f"mosquitto-{port}.conf"
        lines = [
            f"listener {port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "user root",
            "log_dest stderr",
            "log_type all",
        ]
        if "max_keepalive" in options:
            lines.append(f"max_keepalive {options['max_keepalive']}")
        if "max_packet_size" in options:
            lines.append(f"max_packet_size {options['max_packet_size']}")
        for key in ("password_file", "acl_file"):
            if key in options:
                lines.append(f"{key} {options[key]}")
        # TLS on the (only) listener: {"cafile": ..., "certfile": ..., "keyfile": ...}.
        for key, path in options.get("tls", {}).items():
            lines.append(f"{key} {path}")
        if "password_file" in options:
            lines[1] = "allow_anonymous false"
        conf.write_text("\n".join(lines) + "\n")
        log_path = workdir / f"mosquitto-{port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL, cwd=workdir)
        broker = RunningBroker("mosquitto", "127.0.0.1", port, proc, log_path)
        try:
            wait_listening("127.0.0.1", port, proc, STARTUP_TIMEOUT)
            return broker
        except Exception as e:  # noqa: BLE001
            broker.stop(signal.SIGKILL)
            last_error = f"{e}; log:\n{broker.log()}"
    raise RuntimeError(f"mosquitto did not come up: {last_error}")


def start_broker(workdir: Path, *, max_keepalive: int | None = None,
                 max_packet_size: int | None = None,
                 deny_subscribe: list[str] | None = None) -> RunningBroker:
    """The broker selected by TEST_BROKER, with the options mapped to its configuration."""
    if BROKER_KIND == "mosquitto":
        if deny_subscribe:
            raise NotImplementedError("deny_subscribe has no mosquitto equivalent here")
        opts = {}
        if max_keepalive is not None:
            opts["max_keepalive"] = max_keepalive
        if max_packet_size is not None:
            opts["max_packet_size"] = max_packet_size
        return start_mosquitto(workdir, opts)
    args: list[str] = []
    if max_keepalive is not None:
        args += ["--max-keepalive", str(max_keepalive)]
    if max_packet_size is not None:
        args += ["--max-packet-size", str(max_packet_size)]
    for f in deny_subscribe or []:
        args += ["--deny-subscribe", f]
    return start_alicia(workdir, args)
