"""MQTT 5 features: subscription identifiers, topic aliases, message expiry, request/response
properties, user properties, maximum packet size."""

import time

import pytest

import mqttraw as r
from pahoclient import V5, V311, PacketTypes, Properties, prop, publish_props, unique_id


def sub_id_props(ident: int) -> Properties:
    p = Properties(PacketTypes.SUBSCRIBE)
    p.SubscriptionIdentifier = ident
    return p


def ids_of(m) -> list[int]:
    return list(prop(m, "SubscriptionIdentifier", []) or [])


def test_subscription_identifiers(client):
    s = client(V5)
    s.subscribe("si/+", 1, properties=sub_id_props(5))
    s.subscribe("si/#", 1, properties=sub_id_props(7))
    s.subscribe("si/none/x", 1)  # no identifier
    p = client(V5)
    p.publish("si/a", b"both", qos=1)
    got = [s.get()] + s.drain(0.3)
    assert all(m.payload == b"both" for m in got)
    # One copy with both identifiers, or one copy per subscription: the union is {5, 7}.
    assert sorted(i for m in got for i in ids_of(m)) == [5, 7], [ids_of(m) for m in got]
    p.publish("si/a/b", b"deep", qos=1)
    m = s.get()
    assert (m.payload, ids_of(m)) == (b"deep", [7])
    p.publish("si/none/x", b"plain", qos=1)
    got = [s.get()] + s.drain(0.3)
    # si/none/x also matches si/# (id 7); the copy for the unidentified subscription has none.
    assert sorted(i for m in got for i in ids_of(m)) == [7]


def test_subscription_identifier_replaced_on_resubscribe(client):
    s = client(V5)
    s.subscribe("sir/t", 1, properties=sub_id_props(3))
    s.subscribe("sir/t", 1, properties=sub_id_props(300000))
    p = client(V5)
    p.publish("sir/t", b"x", qos=1)
    assert ids_of(s.get()) == [300000]
    s.subscribe("sir/t", 1)
    p.publish("sir/t", b"y", qos=1)
    assert ids_of(s.get()) == []


def test_subscription_identifier_on_retained(client):
    p = client(V5)
    p.publish("sirt/t", b"r", qos=1, retain=True)
    s = client(V5)
    s.subscribe("sirt/#", 1, properties=sub_id_props(42))
    m = s.get()
    assert m.retain and ids_of(m) == [42]


def test_request_response_properties_passed_through(client):
    s = client(V5)
    s.subscribe("rr/req", 2)
    p = client(V5)
    users = [("a", "1"), ("b", "2"), ("a", "3"), ("unicode", "ünï €")]
    props = publish_props(ResponseTopic="rr/resp/" + p.client_id, CorrelationData=b"\x00id-7",
                          ContentType="application/json", PayloadFormatIndicator=1,
                          UserProperty=users)
    for qos in (0, 1, 2):
        p.publish("rr/req", b'{"q":1}', qos=qos, properties=props)
        m = s.get()
        assert prop(m, "ResponseTopic") == "rr/resp/" + p.client_id
        assert prop(m, "CorrelationData") == b"\x00id-7"
        assert prop(m, "ContentType") == "application/json"
        assert prop(m, "PayloadFormatIndicator") == 1
        assert prop(m, "UserProperty") == users, "user properties keep their order"
        assert prop(m, "MessageExpiryInterval") is None
    # A response on the response topic.
    p.subscribe("rr/resp/" + p.client_id, 1)
    s.publish(prop(m, "ResponseTopic"), b"answer", qos=1,
              properties=publish_props(CorrelationData=prop(m, "CorrelationData")))
    resp = p.get()
    assert resp.payload == b"answer" and prop(resp, "CorrelationData") == b"\x00id-7"


def test_properties_not_leaked_to_v311(client):
    s = client(V311)
    s.subscribe("pl3/t", 1)
    p = client(V5)
    p.publish("pl3/t", b"x", qos=1, properties=publish_props(UserProperty=[("k", "v")]))
    m = s.get()
    assert m.payload == b"x"


def test_message_expiry_live_delivery(client):
    s = client(V5)
    s.subscribe("mex/t", 1)
    p = client(V5)
    p.publish("mex/t", b"x", qos=1, properties=publish_props(MessageExpiryInterval=60))
    remaining = prop(s.get(), "MessageExpiryInterval")
    assert remaining is not None and 58 <= remaining <= 60, remaining


def test_message_expiry_in_offline_queue(client):
    cid = unique_id("mexq")
    s = client(V5, cid, clean=False, session_expiry=300)
    s.subscribe("mexq/t", 1)
    s.disconnect()
    p = client(V5)
    p.publish("mexq/t", b"expires", qos=1, properties=publish_props(MessageExpiryInterval=1))
    p.publish("mexq/t", b"counts down", qos=1,
              properties=publish_props(MessageExpiryInterval=30))
    p.publish("mexq/t", b"forever", qos=1)
    time.sleep(2.1)
    s = client(V5, cid, clean=False, session_expiry=300)
    assert s.connack.session_present
    got = s.expect(2)
    assert [m.payload for m in got] == [b"counts down", b"forever"], "expired message dropped"
    remaining = prop(got[0], "MessageExpiryInterval")
    assert remaining is not None and 1 <= remaining <= 28, f"remaining expiry {remaining}"
    assert prop(got[1], "MessageExpiryInterval") is None
    s.assert_no_message(0.2)


def test_client_to_server_topic_aliases(client):
    s = client(V5)
    s.subscribe("al/#", 1)
    p = client(V5)
    maximum = prop(p.connack.properties, "TopicAliasMaximum", 0)
    assert maximum >= 1
    seq = [("al/t", 1, b"1"), ("", 1, b"2"), ("al/u", 1, b"3"), ("", 1, b"4")]
    if maximum >= 2:
        seq += [("al/v", 2, b"5"), ("", 2, b"6"), ("", 1, b"7")]
    for topic, alias, payload in seq:
        p.publish(topic, payload, qos=1, properties=publish_props(TopicAlias=alias))
    expected = [("al/t", b"1"), ("al/t", b"2"), ("al/u", b"3"), ("al/u", b"4")]
    if maximum >= 2:
        expected += [("al/v", b"5"), ("al/v", b"6"), ("al/u", b"7")]
    got = s.expect(len(expected))
    assert [(m.topic, m.payload) for m in got] == expected
    # Aliases belong to the publisher's connection: the subscriber sees none.
    assert all(prop(m, "TopicAlias") is None for m in got)


def test_topic_alias_scope_is_per_connection(client, raw):
    s = client(V5)
    s.subscribe("scope/#", 1)
    a = raw(5)
    a.handshake(unique_id())
    a.send(r.publish("scope/a", b"a", qos=1, packet_id=1, version=5,
                     props=[(r.TOPIC_ALIAS, 1)]))
    a.expect(r.PUBACK)
    b = raw(5)
    b.handshake(unique_id())
    # Alias 1 is unknown on this connection: a Protocol Error for b only.
    b.send(r.publish("", b"b", qos=1, packet_id=1, version=5, props=[(r.TOPIC_ALIAS, 1)]))
    got = b.wait_closed(3)
    assert all(p.type == r.DISCONNECT for p in got), got
    assert [m.payload for m in s.expect(1)] == [b"a"]
    a.send(r.publish("", b"a2", qos=1, packet_id=2, version=5, props=[(r.TOPIC_ALIAS, 1)]))
    a.expect(r.PUBACK)
    m = s.get()
    assert (m.topic, m.payload) == ("scope/a", b"a2")


def resolve_aliases(packets, maximum):
    """Resolve server->client topic aliases; checks the server used them correctly."""
    table, out, used = {}, [], 0
    for pkt in packets:
        alias = pkt.props.get(r.TOPIC_ALIAS)
        topic = pkt.topic
        if alias is not None:
            assert 1 <= alias <= maximum, f"alias {alias} beyond our maximum {maximum}"
            if topic:
                table[alias] = topic
            else:
                assert alias in table, f"alias {alias} used before it was set"
                topic = table[alias]
                used += 1
        else:
            assert topic, "empty topic without an alias"
        out.append((topic, pkt.payload))
    return out, used


def collect_publishes(c, n, timeout=5.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        pkt = c.read(max(0.01, deadline - time.monotonic()))
        if pkt.type == r.PUBLISH:
            got.append(pkt)
            if pkt.qos == 1:
                c.send(r.ack(r.PUBACK, pkt.packet_id, 5))
    return got


def alias_traffic(client, raw, maximum):
    c = raw(5)
    props = [(r.TOPIC_ALIAS_MAXIMUM, maximum)] if maximum else None
    c.handshake(unique_id(), props=props)
    c.sub([("oa/#", 1)])
    p = client(V5)
    sent = []
    for i in range(4):
        for t in ("oa/first/long/topic/name", "oa/second", "oa/third"):
            payload = f"{t}-{i}".encode()
            p.publish(t, payload, qos=1)
            sent.append((t, payload))
    return c, collect_publishes(c, len(sent)), sent


def test_server_to_client_topic_aliases_resolve(client, raw):
    c, packets, sent = alias_traffic(client, raw, maximum=2)
    got, _used = resolve_aliases(packets, 2)
    assert got == sent


def test_no_server_topic_aliases_without_client_maximum(client, raw):
    c, packets, sent = alias_traffic(client, raw, maximum=0)
    assert all(r.TOPIC_ALIAS not in p.props for p in packets), packets
    assert [(p.topic, p.payload) for p in packets] == sent


@pytest.mark.alicia_only("outbound topic aliases")
def test_server_uses_topic_aliases(client, raw):
    c, packets, sent = alias_traffic(client, raw, maximum=2)
    got, used = resolve_aliases(packets, 2)
    assert got == sent
    assert used > 0, "the server never sent a PUBLISH with an empty topic and an alias"


def test_client_maximum_packet_size_respected(client, raw):
    limit = 128
    c = raw(5)
    c.handshake(unique_id(), props=[(r.MAXIMUM_PACKET_SIZE, limit)])
    c.sub([("mps/#", 1)])
    p = client(V5)
    p.publish("mps/big", b"B" * 500, qos=1)
    p.publish("mps/fits", b"small", qos=1,
              properties=publish_props(UserProperty=[("x", "y" * 300)]))  # too big with props
    p.publish("mps/small", b"s" * 10, qos=1)
    got = collect_publishes(c, 1)
    assert [(x.topic, x.payload) for x in got] == [("mps/small", b"s" * 10)]
    assert got[0].wire_size <= limit
    c.send(r.pingreq())
    nxt = c.read(1)
    assert nxt.type == r.PINGRESP, f"the oversized messages were not dropped: {nxt!r}"


def test_client_maximum_packet_size_retained_and_queued(client, raw):
    limit = 100
    p = client(V5)
    p.publish("mpr/big", b"B" * 300, qos=1, retain=True)
    p.publish("mpr/small", b"ok", qos=1, retain=True)
    c = raw(5)
    c.handshake(unique_id(), props=[(r.MAXIMUM_PACKET_SIZE, limit)])
    c.sub([("mpr/#", 1)])
    got = collect_publishes(c, 1)
    assert [(x.topic, x.payload) for x in got] == [("mpr/small", b"ok")]
    assert all(x.wire_size <= limit for x in got)
    c.send(r.pingreq())
    assert c.read(1).type == r.PINGRESP
