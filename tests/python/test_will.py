"""Will messages: abrupt close, clean disconnect, retained wills, v5 will delay and 0x04."""

import time

from brokers import KEEPALIVE_1S_CLOSE_WITHIN, STRICT
from pahoclient import V5, V311, PacketTypes, Properties, prop, unique_id


def will_props(**values) -> Properties:
    p = Properties(PacketTypes.WILLMESSAGE)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def watcher(client, protocol, topic="will/#"):
    w = client(protocol)
    w.subscribe(topic, 2)
    return w


def test_will_published_on_abrupt_close(client, protocol):
    w = watcher(client, protocol)
    c = client(protocol, connect=False)
    c.will_set("will/a", b"gone", qos=1)
    c.connect()
    c.drop()
    m = w.get()
    assert (m.topic, m.payload, m.qos, m.retain) == ("will/a", b"gone", 1, False)
    w.assert_no_message(0.2)


def test_no_will_on_clean_disconnect(client, protocol):
    w = watcher(client, protocol)
    c = client(protocol, connect=False)
    c.will_set("will/b", b"should not appear", qos=1)
    c.connect()
    c.disconnect()
    w.assert_no_message(0.5)


def test_retained_will(client, protocol):
    c = client(protocol, connect=False)
    c.will_set("will/ret", b"offline", qos=1, retain=True)
    c.connect()
    c.sync()
    c.drop()
    # Wait until the will was published, then a new subscriber must see it retained.
    w = watcher(client, protocol, "will/ret")
    w.publish("will/ret/sync", b"", qos=1)  # a round trip; the will may arrive live or retained
    m = w.get()
    assert m.payload == b"offline"
    late = client(protocol)
    late.subscribe("will/ret", 1)
    m = late.get()
    assert (m.payload, m.retain) == (b"offline", True)


def test_will_on_keepalive_timeout(client, raw, version):
    protocol = V5 if version == 5 else V311
    w = watcher(client, protocol)
    c = raw(version)
    c.handshake(unique_id(), keepalive=1, will={"topic": "will/ka", "payload": b"timeout",
                                                "qos": 1})
    m = w.get(timeout=KEEPALIVE_1S_CLOSE_WITHIN + 1)
    assert m.payload == b"timeout"


def test_will_on_protocol_violation(client, raw, version):
    protocol = V5 if version == 5 else V311
    w = watcher(client, protocol)
    c = raw(version)
    c.handshake(unique_id(), will={"topic": "will/bad", "payload": b"violated", "qos": 1})
    c.send(b"\x36\x05\x00\x01a\x00\x01")  # PUBLISH with QoS 3: malformed
    c.wait_closed(3)
    assert w.get().payload == b"violated"


def test_will_on_takeover_v311(client):
    w = watcher(client, V311)
    cid = unique_id("wt")
    a = client(V311, cid, connect=False)
    a.will_set("will/takeover", b"replaced", qos=1)
    a.connect()
    client(V311, cid)
    a.wait_disconnected()
    assert w.get().payload == b"replaced"


def test_v5_will_properties_passed_through(client):
    w = watcher(client, V5)
    c = client(V5, connect=False)
    c.will_set("will/p", b"{}", qos=1, properties=will_props(
        ContentType="application/json", ResponseTopic="will/reply", CorrelationData=b"cd",
        PayloadFormatIndicator=1, UserProperty=[("why", "crash")]))
    c.connect()
    c.drop()
    m = w.get()
    assert m.payload == b"{}"
    assert prop(m, "ContentType") == "application/json"
    assert prop(m, "ResponseTopic") == "will/reply"
    assert prop(m, "CorrelationData") == b"cd"
    assert prop(m, "PayloadFormatIndicator") == 1
    assert prop(m, "UserProperty") == [("why", "crash")]


def test_v5_disconnect_with_will_message(client):
    w = watcher(client, V5)
    c = client(V5, connect=False)
    c.will_set("will/04", b"asked for", qos=1)
    c.connect()
    c.disconnect(reason=0x04)
    assert w.get().payload == b"asked for"


def test_v5_will_delay(client):
    w = watcher(client, V5)
    c = client(V5, connect=False)
    c.will_set("will/delay", b"late", qos=1, properties=will_props(WillDelayInterval=2))
    c.connect(session_expiry=60)
    c.drop()
    t0 = time.monotonic()
    w.assert_no_message(1.3)
    m = w.get(timeout=4)
    elapsed = time.monotonic() - t0
    assert m.payload == b"late"
    assert 1.3 <= elapsed <= 4.5, elapsed


def test_v5_will_delay_cancelled_by_reconnect(client):
    w = watcher(client, V5)
    cid = unique_id("wd")
    c = client(V5, cid, clean=False, connect=False)
    c.will_set("will/cancel", b"must not appear", qos=1,
               properties=will_props(WillDelayInterval=1))
    c.connect(session_expiry=60)
    c.drop()
    again = client(V5, cid, clean=False, session_expiry=60)
    assert again.connack.session_present
    w.assert_no_message(2.0)


def test_v5_will_delay_capped_by_session_expiry(client):
    w = watcher(client, V5)
    c = client(V5, connect=False)
    c.will_set("will/cap", b"session over", qos=1, properties=will_props(WillDelayInterval=60))
    c.connect(session_expiry=1)
    c.drop()
    t0 = time.monotonic()
    m = w.get(timeout=4)
    assert m.payload == b"session over"
    assert time.monotonic() - t0 <= 4


def test_v5_will_sent_at_once_without_delay_even_with_session(client):
    w = watcher(client, V5)
    c = client(V5, connect=False)
    c.will_set("will/now", b"now", qos=1)
    c.connect(session_expiry=60)
    c.drop()
    assert w.get(timeout=1.5).payload == b"now"


def test_v5_takeover_with_will_delay_keeps_will_back(client):
    """A new connection resuming the session before the delay ends: no will."""
    w = watcher(client, V5)
    cid = unique_id("wtd")
    a = client(V5, cid, clean=False, connect=False)
    a.will_set("will/td", b"must not appear", qos=1, properties=will_props(WillDelayInterval=1))
    a.connect(session_expiry=60)
    b = client(V5, cid, clean=False, session_expiry=60)
    assert b.connack.session_present
    reason = a.wait_disconnected()
    if STRICT or reason != 0x80:  # mosquitto closes without DISCONNECT (paho reports 0x80)
        assert reason == 0x8E, reason
    w.assert_no_message(2.0)
