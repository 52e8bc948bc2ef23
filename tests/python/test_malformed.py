"""Malformed packets and protocol errors sent through raw sockets.

Each one must close only the offending connection: a v5 connection first gets a DISCONNECT
with the right reason code, a 3.1.1 connection is just closed. A paho client and another raw
connection that were connected the whole time must keep working, and new connections must
still be accepted.
"""

from dataclasses import dataclass
from typing import Callable

import pytest

import mqttraw as r
from brokers import STRICT
from pahoclient import V5, unique_id

MALFORMED, PROTOCOL_ERROR = 0x81, 0x82
TOPIC_NAME_INVALID, PACKET_TOO_LARGE = 0x90, 0x95
RECEIVE_MAXIMUM_EXCEEDED, TOPIC_ALIAS_INVALID = 0x93, 0x94


@dataclass
class Case:
    name: str
    build: Callable  # (version, connack) -> bytes sent after a successful CONNECT
    v5_reasons: tuple
    versions: tuple = (4, 5)
    alicia_only: str | None = None
    mosquitto_reasons: tuple = ()  # also accepted from mosquitto (validation runs only)


def pub_body(topic: bytes, version: int, pid: bytes = b"\x00\x01", props: bytes = b"\x00"):
    return r.string(topic) + pid + (props if version == 5 else b"") + b"payload"


CASES = [
    Case("publish-qos3", lambda v, a: r.packet(r.PUBLISH, 0b0110, pub_body(b"a/b", v)),
         (MALFORMED,)),
    Case("remaining-length-5-bytes", lambda v, a: b"\x30\xff\xff\xff\xff\x7f",
         (MALFORMED,)),
    Case("second-connect", lambda v, a: r.connect(unique_id(), v), (PROTOCOL_ERROR,)),
    Case("reserved-packet-type-0", lambda v, a: b"\x00\x00", (MALFORMED, PROTOCOL_ERROR)),
    Case("subscribe-bad-header-flags",
         lambda v, a: r.subscribe(1, [("a/b", 0)], v, flags=0x00), (MALFORMED,)),
    Case("pubrel-bad-header-flags", lambda v, a: r.packet(r.PUBREL, 0, r.u16(1)),
         (MALFORMED,)),
    Case("subscribe-no-filters", lambda v, a: r.subscribe(1, [], v),
         (MALFORMED, PROTOCOL_ERROR)),
    Case("unsubscribe-no-filters", lambda v, a: r.unsubscribe(1, [], v),
         (MALFORMED, PROTOCOL_ERROR)),
    Case("subscribe-qos3", lambda v, a: r.subscribe(1, [("a/b", 3)], v),
         (MALFORMED, PROTOCOL_ERROR)),
    Case("publish-wildcard-topic",
         lambda v, a: r.publish("a/+", b"x", qos=1, packet_id=1, version=v),
         (MALFORMED, PROTOCOL_ERROR, TOPIC_NAME_INVALID)),
    Case("publish-invalid-utf8-topic",
         lambda v, a: r.publish(b"a/\xff\xfe", b"x", qos=1, packet_id=1, version=v),
         (MALFORMED, PROTOCOL_ERROR, TOPIC_NAME_INVALID)),
    Case("publish-nul-in-topic",
         lambda v, a: r.publish(b"a/\x00b", b"x", qos=1, packet_id=1, version=v),
         (MALFORMED, PROTOCOL_ERROR, TOPIC_NAME_INVALID)),
    Case("publish-qos1-packet-id-0",
         lambda v, a: r.publish("a/b", b"x", qos=1, packet_id=0, version=v),
         (MALFORMED, PROTOCOL_ERROR)),
    Case("publish-topic-length-past-end",
         lambda v, a: r.packet(r.PUBLISH, 0, b"\x00\x20a/b"), (MALFORMED,)),
    # MQTT 5 only.
    Case("topic-alias-0",
         lambda v, a: r.publish("a/b", b"x", version=5, props=[(r.TOPIC_ALIAS, 0)]),
         (TOPIC_ALIAS_INVALID, PROTOCOL_ERROR), versions=(5,), mosquitto_reasons=(MALFORMED,)),
    Case("topic-alias-above-maximum",
         lambda v, a: r.publish("a/b", b"x", version=5, props=[
             (r.TOPIC_ALIAS, a.props.get(r.TOPIC_ALIAS_MAXIMUM, 0) + 1)]),
         (TOPIC_ALIAS_INVALID,), versions=(5,)),
    Case("topic-alias-unknown",
         lambda v, a: r.publish("", b"x", version=5, props=[(r.TOPIC_ALIAS, 1)]),
         (PROTOCOL_ERROR, TOPIC_ALIAS_INVALID), versions=(5,)),
    Case("empty-topic-without-alias", lambda v, a: r.publish("", b"x", version=5),
         (PROTOCOL_ERROR, TOPIC_NAME_INVALID), versions=(5,)),
    Case("duplicate-property",
         lambda v, a: r.publish("a/b", b"x", version=5, props=[
             (r.PAYLOAD_FORMAT_INDICATOR, 0), (r.PAYLOAD_FORMAT_INDICATOR, 0)]),
         (MALFORMED, PROTOCOL_ERROR), versions=(5,)),
    Case("unknown-property",
         lambda v, a: r.packet(r.PUBLISH, 0, r.string("a/b") + b"\x02\x7f\x00x"),
         (MALFORMED, PROTOCOL_ERROR), versions=(5,)),
    Case("property-length-past-end",
         lambda v, a: r.packet(r.PUBLISH, 0, r.string("a/b") + b"\x10\x01"),
         (MALFORMED,), versions=(5,)),
    Case("subscription-identifier-0",
         lambda v, a: r.subscribe(1, [("a/b", 0)], 5, props=[(r.SUBSCRIPTION_IDENTIFIER, 0)]),
         (MALFORMED, PROTOCOL_ERROR), versions=(5,)),
    Case("subscribe-retain-handling-3", lambda v, a: r.subscribe(1, [("a/b", 0x30)], 5),
         (MALFORMED, PROTOCOL_ERROR), versions=(5,)),
    Case("subscribe-reserved-option-bits", lambda v, a: r.subscribe(1, [("a/b", 0xC0)], 5),
         (MALFORMED, PROTOCOL_ERROR), versions=(5,)),
    Case("no-local-on-shared-subscription",
         lambda v, a: r.subscribe(1, [("$share/g/a/b", 0x04)], 5),
         (PROTOCOL_ERROR,), versions=(5,),
         alicia_only="mosquitto accepts No Local on a shared subscription"),
    Case("disconnect-sets-session-expiry-after-zero",
         lambda v, a: r.disconnect(5, 0, [(r.SESSION_EXPIRY_INTERVAL, 60)]),
         (PROTOCOL_ERROR,), versions=(5,), alicia_only="DISCONNECT 0x82 on a session expiry "
                                                       "raised from 0"),
    Case("receive-maximum-exceeded",
         lambda v, a: b"".join(
             r.publish("a/b", b"x", qos=2, packet_id=i, version=5)
             for i in range(1, a.props.get(r.RECEIVE_MAXIMUM, 65535) + 2)),
         (RECEIVE_MAXIMUM_EXCEEDED,), versions=(5,), alicia_only="0x93"),
]


def params():
    for case in CASES:
        for v in case.versions:
            marks = [pytest.mark.alicia_only(case.alicia_only)] if case.alicia_only else []
            yield pytest.param(case, v, id=f"{case.name}-{'v5' if v == 5 else 'v311'}",
                               marks=marks)


def check_closed_with(c, version, reasons, allowed_before=()):
    got = [p for p in c.wait_closed(5) if p.type not in allowed_before]
    if version == 4:
        assert got == [], f"3.1.1 connection must just be closed, got {got!r}"
    elif STRICT or got:  # mosquitto 2.0.11 sometimes closes without a DISCONNECT
        assert len(got) == 1 and got[0].type == r.DISCONNECT, \
            f"expected DISCONNECT with one of {[hex(x) for x in reasons]}, got {got!r}"
        assert got[0].reason in reasons, \
            f"DISCONNECT reason {got[0].reason:#04x}, expected one of {[hex(x) for x in reasons]}"


@pytest.mark.parametrize("case,version", list(params()))
def test_malformed_closes_only_that_connection(case, version, client, raw):
    bystander = client(V5)
    bystander.subscribe("bystander/t", 1)
    other = raw(4)
    other.handshake(unique_id())

    bad = raw(version)
    connack = bad.handshake(unique_id())
    if case.name == "receive-maximum-exceeded" and \
            connack.props.get(r.RECEIVE_MAXIMUM, 65535) >= 65535:
        pytest.fail("server Receive Maximum is 65535: in-flight QoS 2 messages cannot exceed "
                    "it with distinct packet identifiers")
    bad.try_send(case.build(version, connack))
    reasons = case.v5_reasons + (() if STRICT else case.mosquitto_reasons)
    check_closed_with(bad, version, reasons, allowed_before=(r.PUBREC,))

    # Everyone else is unaffected.
    bystander.publish("bystander/t", b"still fine", qos=1)
    assert bystander.get().payload == b"still fine"
    assert bystander.is_connected
    other.send(r.pingreq())
    assert other.expect(r.PINGRESP)
    fresh = raw(version)
    fresh.handshake(unique_id())


def test_packet_too_large(make_broker, version):
    b = make_broker(max_packet_size=1024)
    c = r.RawClient(b.host, b.port, version)
    ok = r.RawClient(b.host, b.port, 4)
    try:
        ok.handshake(unique_id())
        ack = c.handshake(unique_id())
        if version == 5:
            assert ack.props.get(r.MAXIMUM_PACKET_SIZE) == 1024, ack
        c.try_send(r.publish("big/t", b"x" * 2000, version=version))
        check_closed_with(c, version, (PACKET_TOO_LARGE,))
        ok.send(r.publish("small/t", b"x" * 500, qos=1, packet_id=1))
        assert ok.expect(r.PUBACK).packet_id == 1
    finally:
        c.close()
        ok.close()


def test_truncated_packet_then_eof(client, raw, version):
    bystander = client(V5)
    bad = raw(version)
    bad.handshake(unique_id())
    bad.send(b"\x30\x10\x00\x03a/b")  # 16 bytes announced, 5 sent
    bad.sock.shutdown(1)  # SHUT_WR: the server reads EOF mid-packet
    bad.wait_closed(5)
    bystander.subscribe("trunc/t", 1)
    bystander.publish("trunc/t", b"ok", qos=1)
    assert bystander.get().payload == b"ok"


def test_garbage_instead_of_connect(client, raw):
    bystander = client(V5)
    bad = raw(4)
    # Longer than the 69 bytes its first two bytes announce as a packet.
    bad.send(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"y" * 200 + b"\r\n\r\n")
    got = bad.wait_closed(5)
    assert all(p.type == r.CONNACK and p.reason != 0 for p in got), got
    bystander.subscribe("garbage/t", 1)
    bystander.publish("garbage/t", b"ok", qos=1)
    assert bystander.get().payload == b"ok"
