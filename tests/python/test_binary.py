"""The alicia binary itself: the listening line, `up`, signals (alicia only)."""

import signal
import socket
import subprocess

import pytest

import brokers
import mqttraw as r

pytestmark = pytest.mark.alicia_only("tests of the alicia binary")


def test_listening_line_and_free_port(tmp_path):
    a = brokers.start_alicia(tmp_path)
    (tmp_path / "b").mkdir()
    b = brokers.start_alicia(tmp_path / "b")
    try:
        assert a.port != b.port and 0 not in (a.port, b.port)
        for x in (a, b):
            c = r.RawClient(x.host, x.port, 4)
            c.handshake("line-check")
            c.close()
    finally:
        a.stop()
        b.stop()


def test_up_subcommand(tmp_path):
    x = brokers.start_alicia(tmp_path, subcommand="up")
    try:
        c = r.RawClient(x.host, x.port, 5)
        c.handshake("up-check")
        c.close()
    finally:
        assert x.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_broker(tmp_path, sig):
    x = brokers.start_alicia(tmp_path)
    c = r.RawClient(x.host, x.port, 4)
    c.handshake("sig-check")
    x.proc.send_signal(sig)
    try:
        code = x.proc.wait(5)
    except Exception:  # noqa: BLE001
        x.stop(signal.SIGKILL)
        raise AssertionError(f"alicia still running 5 s after {sig.name}") from None
    assert code == 0, f"exit status {code}; stderr:\n{x.log()}"
    with pytest.raises(OSError):
        socket.create_connection((x.host, x.port), timeout=1).close()
    c.close()


def test_port_in_use_fails_cleanly(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run([brokers.alicia_bin(), "broker", "--bind", "127.0.0.1", "--port",
                              str(port)], capture_output=True, timeout=10)
    assert out.returncode != 0
    assert b"mqtt listening" not in out.stdout
    assert out.stderr, "an error message on stderr"
