"""Keep-alive: a silent client is dropped after 1.5x its keep-alive; an active one is not."""

import time

import pytest

import mqttraw as r
from brokers import KEEPALIVE_1S_CLOSE_WITHIN
from pahoclient import unique_id


def assert_keepalive_close(c, version, started):
    got = c.wait_closed(KEEPALIVE_1S_CLOSE_WITHIN + 1)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed <= KEEPALIVE_1S_CLOSE_WITHIN, f"closed after {elapsed:.2f}s"
    if version == 5:
        assert got == [] or [(p.type, p.reason) for p in got] == [(r.DISCONNECT, 0x8D)], got
    else:
        assert got == [], got


def test_silent_client_disconnected(raw, version):
    c = raw(version)
    c.handshake(unique_id(), keepalive=1)
    assert_keepalive_close(c, version, time.monotonic())


def test_active_client_kept(raw, version):
    c = raw(version)
    c.handshake(unique_id(), keepalive=1)
    # 2 s of traffic every 0.5 s (PINGREQ or PUBLISH both count) keeps the connection open.
    for i in range(4):
        time.sleep(0.5)
        if i % 2:
            c.send(r.publish("ka/t", b"x", qos=1, packet_id=i, version=version))
            assert c.expect(r.PUBACK).packet_id == i
        else:
            c.send(r.pingreq())
            assert c.expect(r.PINGRESP)
    # And once silent, it is dropped.
    assert_keepalive_close(c, version, time.monotonic())


@pytest.mark.alicia_only("max_keepalive below 10")
def test_v5_server_keep_alive_is_enforced(make_broker):
    b = make_broker(max_keepalive=1)
    c = r.RawClient(b.host, b.port, 5)
    try:
        ack = c.handshake(unique_id(), keepalive=60)
        assert ack.props.get(r.SERVER_KEEP_ALIVE) == 1, ack
        assert_keepalive_close(c, 5, time.monotonic())
    finally:
        c.close()


def test_keepalive_zero_means_no_timeout(raw, version):
    c = raw(version)
    c.handshake(unique_id(), keepalive=0)
    time.sleep(1.6)
    c.send(r.pingreq())
    assert c.expect(r.PINGRESP)
