"""Retained messages: delivery on subscribe, replacement, deletion, retain flag, v5 options."""

import time

import pytest

from pahoclient import V5, V311, SubscribeOptions, prop, publish_props


def test_retained_delivered_on_subscribe(client, protocol):
    p = client(protocol)
    p.publish("ret/a", b"kept", qos=1, retain=True)
    s = client(protocol)
    s.subscribe("ret/a", 1)
    m = s.get()
    assert (m.topic, m.payload, m.retain, m.qos) == ("ret/a", b"kept", True, 1)


@pytest.mark.parametrize("msg_qos,sub_qos", [(2, 0), (0, 2), (2, 1), (1, 2)])
def test_retained_qos_is_minimum(client, protocol, msg_qos, sub_qos):
    p = client(protocol)
    p.publish("retq/t", b"x", qos=msg_qos, retain=True)
    p.sync()
    s = client(protocol)
    s.subscribe("retq/t", sub_qos)
    m = s.get()
    assert m.retain and m.qos == min(msg_qos, sub_qos)


def test_retained_replaced_and_deleted(client, protocol):
    p = client(protocol)
    p.publish("retd/t", b"v1", qos=1, retain=True)
    p.publish("retd/t", b"v2", qos=1, retain=True)
    s = client(protocol)
    s.subscribe("retd/t", 1)
    assert [m.payload for m in s.expect(1)] == [b"v2"]
    s.assert_no_message(0.2)
    # An empty retained payload deletes the retained message; it is still delivered live.
    p.publish("retd/t", b"", qos=1, retain=True)
    live = s.get()
    assert live.payload == b""
    s2 = client(protocol)
    s2.subscribe("retd/t", 1)
    s2.assert_no_message(0.3)


def test_non_retained_publish_keeps_retained_message(client, protocol):
    p = client(protocol)
    p.publish("retk/t", b"retained", qos=1, retain=True)
    p.publish("retk/t", b"plain", qos=1, retain=False)
    s = client(protocol)
    s.subscribe("retk/t", 1)
    assert [m.payload for m in s.expect(1)] == [b"retained"]


def test_retain_flag_cleared_on_live_delivery(client, protocol):
    s = client(protocol)
    s.subscribe("retl/t", 1)
    p = client(protocol)
    p.publish("retl/t", b"live", qos=1, retain=True)
    m = s.get()
    assert m.payload == b"live"
    assert m.retain is False, "established subscriptions get RETAIN 0 (no retain-as-published)"


def test_retained_with_wildcards(client, protocol):
    p = client(protocol)
    topics = ["retw/a", "retw/b/c", "retw/b/d", "other/x"]
    for t in topics:
        p.publish(t, t.encode(), qos=1, retain=True)
    s = client(protocol)
    s.subscribe("retw/#", 1)
    got = s.expect(3)
    assert sorted(m.topic for m in got) == ["retw/a", "retw/b/c", "retw/b/d"]
    assert all(m.retain and m.payload == m.topic.encode() for m in got)
    s.assert_no_message(0.2)
    s2 = client(protocol)
    s2.subscribe("retw/+/c", 1)
    assert [m.topic for m in s2.expect(1)] == ["retw/b/c"]


def test_retained_resent_on_resubscribe(client, protocol):
    p = client(protocol)
    p.publish("retr/t", b"again", qos=1, retain=True)
    s = client(protocol)
    s.subscribe("retr/t", 1)
    assert s.get().payload == b"again"
    s.subscribe("retr/t", 1)
    m = s.get()
    assert m.payload == b"again" and m.retain


def test_v5_retain_as_published(client):
    rap = client(V5)
    rap.subscribe("rap/t", options=SubscribeOptions(qos=1, retainAsPublished=True))
    norap = client(V5)
    norap.subscribe("rap/t", options=SubscribeOptions(qos=1, retainAsPublished=False))
    p = client(V5)
    p.publish("rap/t", b"r", qos=1, retain=True)
    p.publish("rap/t", b"n", qos=1, retain=False)
    got = rap.expect(2)
    assert [(m.payload, m.retain) for m in got] == [(b"r", True), (b"n", False)]
    got = norap.expect(2)
    assert [(m.payload, m.retain) for m in got] == [(b"r", False), (b"n", False)]


def test_v5_retain_handling(client):
    p = client(V5)
    p.publish("rh/t", b"stored", qos=1, retain=True)

    rh0 = client(V5)
    opts0 = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE)
    rh0.subscribe("rh/t", options=opts0)
    assert rh0.get().payload == b"stored"
    rh0.subscribe("rh/t", options=opts0)
    assert rh0.get().payload == b"stored", "retain handling 0 sends on every subscribe"

    rh1 = client(V5)
    opts1 = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
    rh1.subscribe("rh/t", options=opts1)
    assert rh1.get().payload == b"stored"
    rh1.subscribe("rh/t", options=opts1)

    rh2 = client(V5)
    opts2 = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
    rh2.subscribe("rh/t", options=opts2)

    rh1.assert_no_message(0.3)  # the subscription already existed
    rh2.assert_no_message(0.01)
    rh0.assert_no_message(0.01)
    # All three still receive live messages.
    p.publish("rh/t", b"live", qos=1)
    for c in (rh0, rh1, rh2):
        assert c.get().payload == b"live"


def test_v5_retained_keeps_properties(client):
    p = client(V5)
    props = publish_props(ContentType="text/plain", ResponseTopic="reply/here",
                          CorrelationData=b"\x01\x02", PayloadFormatIndicator=1,
                          UserProperty=[("k", "v"), ("k", "w")])
    p.publish("retp/t", b"hello", qos=1, retain=True, properties=props)
    s = client(V5)
    s.subscribe("retp/t", 1)
    m = s.get()
    assert m.retain
    assert prop(m, "ContentType") == "text/plain"
    assert prop(m, "ResponseTopic") == "reply/here"
    assert prop(m, "CorrelationData") == b"\x01\x02"
    assert prop(m, "PayloadFormatIndicator") == 1
    assert prop(m, "UserProperty") == [("k", "v"), ("k", "w")]


def test_v5_retained_message_expiry(client):
    p = client(V5)
    p.publish("rete/short", b"short", qos=1, retain=True,
              properties=publish_props(MessageExpiryInterval=1))
    p.publish("rete/long", b"long", qos=1, retain=True,
              properties=publish_props(MessageExpiryInterval=60))
    time.sleep(2.1)
    s = client(V5)
    s.subscribe("rete/#", 1)
    got = s.expect(1)
    assert [m.payload for m in got] == [b"long"], "expired retained message must be gone"
    remaining = prop(got[0], "MessageExpiryInterval")
    assert remaining is not None and remaining <= 58, f"expiry counted down: {remaining}"
    s.assert_no_message(0.2)


def test_v311_retained_from_v5_publisher(client):
    p = client(V5)
    p.publish("retx/t", b"x", qos=2, retain=True,
              properties=publish_props(UserProperty=[("a", "b")]))
    s = client(V311)
    s.subscribe("retx/t", 2)
    m = s.get()
    assert (m.payload, m.retain, m.qos) == (b"x", True, 2)
