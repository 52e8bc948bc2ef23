"""Persistent sessions, offline queues, in-flight redelivery, QoS 2 exactly-once, takeover."""

import time

import mqttraw as r
from brokers import STRICT
from pahoclient import V5, V311, unique_id


def persistent(client, protocol, cid, **kw):
    if protocol == V5:
        return client(V5, cid, clean=False, session_expiry=300, **kw)
    return client(V311, cid, clean=False, **kw)


def session_props(version):
    return [(r.SESSION_EXPIRY_INTERVAL, 300)] if version == 5 else None


def test_offline_messages_queued_and_delivered_on_reconnect(client, protocol):
    cid = unique_id("pq")
    s = persistent(client, protocol, cid)
    s.subscribe([("pq/one", 1), ("pq/two", 2)])
    s.disconnect()
    p = client(protocol)
    for i in range(3):
        p.publish("pq/one", f"one-{i}".encode(), qos=1)
        p.publish("pq/two", f"two-{i}".encode(), qos=2)
    s = persistent(client, protocol, cid)
    assert s.connack.session_present
    got = s.expect(6)
    one = [(m.payload, m.qos) for m in got if m.topic == "pq/one"]
    two = [(m.payload, m.qos) for m in got if m.topic == "pq/two"]
    assert one == [(f"one-{i}".encode(), 1) for i in range(3)]
    assert two == [(f"two-{i}".encode(), 2) for i in range(3)]
    s.assert_no_message(0.2)
    # The subscription is still in place after the reconnect.
    p.publish("pq/one", b"after", qos=1)
    assert s.get().payload == b"after"


def test_offline_queue_downgrades_qos(client, protocol):
    cid = unique_id("pqd")
    s = persistent(client, protocol, cid)
    s.subscribe("pqd/t", 1)
    s.disconnect()
    p = client(protocol)
    p.publish("pqd/t", b"x", qos=2)
    s = persistent(client, protocol, cid)
    m = s.get()
    assert (m.payload, m.qos) == (b"x", 1)


def test_clean_session_discards_subscriptions(client, protocol):
    cid = unique_id("cs")
    s = persistent(client, protocol, cid)
    s.subscribe("cs/t", 1)
    s.disconnect()
    p = client(protocol)
    p.publish("cs/t", b"queued", qos=1)
    s = client(protocol, cid, clean=True)
    assert not s.connack.session_present
    s.assert_no_message(0.3)
    p.publish("cs/t", b"live", qos=1)
    s.assert_no_message(0.3)


def test_v5_session_expires(client):
    cid = unique_id("sx")
    s = client(V5, cid, clean=False, session_expiry=1)
    s.subscribe("sx/t", 1)
    s.disconnect()
    p = client(V5)
    p.publish("sx/t", b"queued", qos=1)
    time.sleep(2.1)
    s = client(V5, cid, clean=False, session_expiry=60)
    assert not s.connack.session_present, "the session expired after 1 s"
    s.assert_no_message(0.3)


def test_unacknowledged_qos1_redelivered_with_dup(client, raw, version):
    cid = unique_id("rd")
    c = raw(version)
    c.handshake(cid, clean=False, props=session_props(version))
    assert c.sub([("rd/t", 1)]) == [1]
    p = client(V5 if version == 5 else V311)
    p.publish("rd/t", b"unacked", qos=1)
    first = c.expect(r.PUBLISH)
    assert first.qos == 1 and first.payload == b"unacked"
    c.abort()  # no PUBACK
    c = raw(version)
    ack = c.handshake(cid, clean=False, props=session_props(version))
    assert ack.session_present
    again = c.expect(r.PUBLISH)
    assert (again.payload, again.qos, again.dup) == (b"unacked", 1, True), again
    assert again.packet_id == first.packet_id
    c.send(r.ack(r.PUBACK, again.packet_id, version))
    c.send(r.pingreq())
    assert c.read().type == r.PINGRESP, "no further redelivery after PUBACK"


def test_unacknowledged_qos2_flow_resumed(client, raw, version):
    cid = unique_id("rd2")
    c = raw(version)
    c.handshake(cid, clean=False, props=session_props(version))
    assert c.sub([("rd2/t", 2)]) == [2]
    p = client(V5 if version == 5 else V311)
    p.publish("rd2/t", b"twice?", qos=2)
    pub = c.expect(r.PUBLISH)
    assert pub.qos == 2
    c.send(r.ack(r.PUBREC, pub.packet_id, version))
    rel = c.expect(r.PUBREL)
    assert rel.packet_id == pub.packet_id
    c.abort()  # no PUBCOMP
    c = raw(version)
    assert c.handshake(cid, clean=False, props=session_props(version)).session_present
    rel2 = c.expect(r.PUBREL)
    assert rel2.packet_id == pub.packet_id, "PUBREL is resent, not the PUBLISH"
    c.send(r.ack(r.PUBCOMP, rel2.packet_id, version))
    c.send(r.pingreq())
    assert c.read().type == r.PINGRESP


def test_qos2_inbound_duplicate_delivered_once(client, raw, version):
    s = client(V5 if version == 5 else V311)
    s.subscribe("eo/t", 2)
    c = raw(version)
    c.handshake(unique_id())
    c.send(r.publish("eo/t", b"once", qos=2, packet_id=7, version=version))
    assert c.expect(r.PUBREC).packet_id == 7
    c.send(r.publish("eo/t", b"once", qos=2, packet_id=7, dup=True, version=version))
    assert c.expect(r.PUBREC).packet_id == 7
    c.send(r.ack(r.PUBREL, 7, version))
    assert c.expect(r.PUBCOMP).packet_id == 7
    assert s.get().payload == b"once"
    s.assert_no_message(0.3)


def test_qos2_inbound_completed_after_reconnect(client, raw, version):
    s = client(V5 if version == 5 else V311)
    s.subscribe("eo2/t", 2)
    cid = unique_id("eo2")
    c = raw(version)
    c.handshake(cid, clean=False, props=session_props(version))
    c.send(r.publish("eo2/t", b"resumed", qos=2, packet_id=9, version=version))
    assert c.expect(r.PUBREC).packet_id == 9
    c.abort()
    c = raw(version)
    assert c.handshake(cid, clean=False, props=session_props(version)).session_present
    c.send(r.ack(r.PUBREL, 9, version))
    comp = c.expect(r.PUBCOMP)
    assert comp.packet_id == 9 and comp.reason == 0, comp
    assert s.get().payload == b"resumed"
    s.assert_no_message(0.3)


def test_qos1_puback_and_qos2_flow_codes(raw, version):
    c = raw(version)
    c.handshake(unique_id())
    c.send(r.publish("codes/t", b"1", qos=1, packet_id=3, version=version))
    ack = c.expect(r.PUBACK)
    assert ack.packet_id == 3
    c.send(r.publish("codes/t", b"2", qos=2, packet_id=4, version=version))
    rec = c.expect(r.PUBREC)
    assert rec.packet_id == 4
    if version == 5:
        # Nobody is subscribed: 0x10 No matching subscribers, or 0x00.
        assert ack.reason in (0x00, 0x10) and rec.reason in (0x00, 0x10)
    c.send(r.ack(r.PUBREL, 4, version))
    assert c.expect(r.PUBCOMP).packet_id == 4


def test_session_takeover(client, protocol):
    cid = unique_id("to")
    a = client(protocol, cid)
    b = client(protocol, cid)
    reason = a.wait_disconnected()
    if protocol == V5 and (STRICT or reason != 0x80):  # mosquitto sends no DISCONNECT
        assert reason == 0x8E, f"expected DISCONNECT 0x8E Session taken over, got {reason}"
    b.subscribe("to/t", 1)
    b.publish("to/t", b"still here", qos=1)
    assert b.get().payload == b"still here"
    assert b.is_connected


def test_session_takeover_raw_v5_disconnect_0x8e(raw):
    cid = unique_id("tor")
    a = raw(5)
    a.handshake(cid)
    b = raw(5)
    b.handshake(cid)
    got = a.wait_closed(3)
    if STRICT or got:
        assert [(p.type, p.reason) for p in got] == [(r.DISCONNECT, 0x8E)], got


def test_session_takeover_keeps_session(client, protocol):
    cid = unique_id("tok")
    a = persistent(client, protocol, cid)
    a.subscribe("tok/t", 1)
    b = persistent(client, protocol, cid)
    assert b.connack.session_present
    a.wait_disconnected()
    p = client(protocol)
    p.publish("tok/t", b"to the new connection", qos=1)
    assert b.get().payload == b"to the new connection"
