"""PUBLISH -> SUBSCRIBE routing: QoS levels, payloads, order, wildcards, $-topics, unsubscribe,
shared subscriptions."""

import time

import pytest

from pahoclient import V5, V311, SubscribeOptions


@pytest.mark.parametrize("pub_qos", [0, 1, 2])
def test_qos_round_trip(client, protocol, pub_qos):
    subs = []
    for sub_qos in (0, 1, 2):
        s = client(protocol)
        assert s.subscribe("rt/t", sub_qos) == [sub_qos]
        subs.append((sub_qos, s))
    p = client(protocol)
    payloads = [f"m{i}".encode() for i in range(5)]
    for pl in payloads:
        p.publish("rt/t", pl, qos=pub_qos)
    for sub_qos, s in subs:
        got = s.expect(len(payloads))
        assert [m.payload for m in got] == payloads, "order of one publisher's messages"
        assert all(m.topic == "rt/t" for m in got)
        assert {m.qos for m in got} == {min(pub_qos, sub_qos)}, "delivered at min(pub, sub) QoS"
        assert not any(m.retain for m in got)
        s.assert_no_message(0.1)


def test_payloads_survive_intact(client, protocol):
    s = client(protocol)
    s.subscribe("pl/t", 1)
    p = client(protocol)
    payloads = [b"", bytes(range(256)), b"\x00" * 10, bytes(i % 251 for i in range(300_000))]
    for pl in payloads:
        p.publish("pl/t", pl, qos=1)
    got = s.expect(len(payloads), timeout=10)
    assert [m.payload for m in got] == payloads


@pytest.mark.parametrize("qos", [1, 2])
def test_many_messages_in_order(client, protocol, qos):
    s = client(protocol)
    s.subscribe("order/t", qos)
    p = client(protocol)
    n = 200
    infos = [p.c.publish("order/t", str(i).encode(), qos) for i in range(n)]
    for info in infos:
        info.wait_for_publish(10)
    got = s.expect(n, timeout=10)
    assert [int(m.payload) for m in got] == list(range(n))


def test_publisher_receives_own_message(client, protocol):
    c = client(protocol)
    c.subscribe("own/t", 1)
    c.publish("own/t", b"echo", qos=1)
    assert c.get().payload == b"echo"


def test_cross_version(client):
    v3 = client(V311)
    v5 = client(V5)
    v3.subscribe("xv/t", 2)
    v5.subscribe("xv/t", 2)
    v5.publish("xv/t", b"from5", qos=2)
    v3.publish("xv/t", b"from3", qos=2)
    for c in (v3, v5):
        assert sorted(m.payload for m in c.expect(2)) == [b"from3", b"from5"]


def test_resubscribe_replaces_subscription(client, protocol):
    s = client(protocol)
    s.subscribe("rs/t", 0)
    s.subscribe("rs/t", 2)
    p = client(protocol)
    p.publish("rs/t", b"x", qos=2)
    m = s.get()
    assert m.qos == 2, "the second SUBSCRIBE replaced the first"
    s.assert_no_message(0.3)


def test_overlapping_subscriptions_max_qos(client, protocol):
    s = client(protocol)
    s.subscribe([("ov/#", 0), ("ov/t", 2)])
    p = client(protocol)
    p.publish("ov/t", b"x", qos=2)
    got = [s.get()] + s.drain(0.3)
    assert 1 <= len(got) <= 2
    assert all(m.payload == b"x" for m in got)
    assert max(m.qos for m in got) == 2, "delivered respecting the maximum matching QoS"


def test_subscribe_multiple_filters_in_one_packet(client, protocol):
    s = client(protocol)
    assert s.subscribe([("mf/a", 0), ("mf/b", 1), ("mf/c", 2)]) == [0, 1, 2]


def test_unsubscribe(client, protocol):
    s = client(protocol)
    s.subscribe([("us/a", 1), ("us/b", 1)])
    rcs = s.unsubscribe("us/a")
    if protocol == V5:
        assert rcs == [0]
    p = client(protocol)
    p.publish("us/a", b"gone", qos=1)
    p.publish("us/b", b"kept", qos=1)
    assert s.get().payload == b"kept"
    s.assert_no_message(0.3)


def test_v5_unsubscribe_unknown_filter(client):
    s = client(V5)
    rcs = s.unsubscribe("never/subscribed")
    assert rcs in ([0x11], [0x00]), rcs  # 0x11 No subscription existed


WILDCARD_CASES = [
    # filter, topics it must match, topics it must not match
    ("sport/tennis/+", ["sport/tennis/p1", "sport/tennis/"],
     ["sport/tennis", "sport/tennis/p1/ranking", "sport/golf/p1"]),
    ("sport/#", ["sport", "sport/tennis", "sport/tennis/p1"], ["sports", "golf/sport"]),
    ("+/+", ["/finance", "a/b"], ["a", "a/b/c"]),
    ("/+", ["/finance"], ["finance", "/finance/x"]),
    ("+", ["a", "finance"], ["/finance", "a/b"]),
    ("a/+/c/#", ["a/b/c", "a/b/c/d/e", "a//c"], ["a/c", "a/b/d"]),
    ("#", ["a", "/finance", "sport/tennis/p1/ranking"], []),
]


def matches(topic_filter: str, topic: str) -> bool:
    """Reference matcher for non-$ topics (MQTT 3.1.1 / 5.0 section 4.7)."""
    f, t = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)


def test_wildcards(client, protocol):
    all_topics = sorted({t for _, yes, no in WILDCARD_CASES for t in yes + no})
    subs = []
    for topic_filter, yes, no in WILDCARD_CASES:
        expected = sorted(t for t in all_topics if matches(topic_filter, t))
        assert set(yes) <= set(expected) and not set(no) & set(expected)  # the table is right
        s = client(protocol)
        s.subscribe(topic_filter, 1)
        subs.append((topic_filter, expected, s))
    p = client(protocol)
    for t in all_topics:
        p.publish(t, t.encode(), qos=1)
    for topic_filter, expected, s in subs:
        got = sorted(m.topic for m in s.expect(len(expected)))
        assert got == expected, f"filter {topic_filter!r}"
    for topic_filter, _expected, s in subs:
        extra = s.drain(0.1)
        assert not extra, f"filter {topic_filter!r} also matched {[m.topic for m in extra]}"


def test_dollar_topics_not_matched_by_leading_wildcards(client, protocol):
    hash_sub = client(protocol)
    hash_sub.subscribe("#", 1)
    plus_sub = client(protocol)
    plus_sub.subscribe("+/x", 1)
    explicit = client(protocol)
    explicit.subscribe([("$app/x", 1), ("$app/#", 1)])
    p = client(protocol)
    p.publish("$app/x", b"dollar", qos=1)
    p.publish("app/x", b"plain", qos=1)
    assert [m.payload for m in hash_sub.expect(1)] == [b"plain"]
    assert [m.payload for m in plus_sub.expect(1)] == [b"plain"]
    got = [explicit.get()] + explicit.drain(0.3)
    assert got and all(m.topic == "$app/x" for m in got), [m.topic for m in got]
    hash_sub.assert_no_message(0.2)
    plus_sub.assert_no_message(0.05)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_shared_subscription(client, protocol, qos):
    members = []
    for _ in range(3):
        m = client(protocol)
        assert m.subscribe("$share/grp/sh/t", qos) == [qos]
        members.append(m)
    other_group = client(protocol)
    other_group.subscribe("$share/other/sh/+", qos)
    plain = client(protocol)
    plain.subscribe("sh/t", qos)
    p = client(protocol)
    n = 30
    for i in range(n):
        p.publish("sh/t", str(i).encode(), qos=max(qos, 1))
    # Every message reaches exactly one member of each group, and every plain subscriber.
    deadline = time.monotonic() + 5
    received = {id(m): [] for m in members}
    while sum(map(len, received.values())) < n and time.monotonic() < deadline:
        for m in members:
            received[id(m)] += m.drain(0.02)
    for m in members:
        received[id(m)] += m.drain(0.1)  # anything extra would be a duplicate
    payloads = sorted(int(msg.payload) for got in received.values() for msg in got)
    assert payloads == list(range(n)), "each message delivered to exactly one group member"
    assert sorted(int(m.payload) for m in other_group.expect(n)) == list(range(n))
    assert sorted(int(m.payload) for m in plain.expect(n)) == list(range(n))
    for m in members:
        assert all(msg.topic == "sh/t" for msg in received[id(m)])


def test_shared_subscription_unsubscribe(client, protocol):
    a = client(protocol)
    b = client(protocol)
    a.subscribe("$share/g/shu/t", 1)
    b.subscribe("$share/g/shu/t", 1)
    a.unsubscribe("$share/g/shu/t")
    p = client(protocol)
    for i in range(5):
        p.publish("shu/t", str(i).encode(), qos=1)
    assert sorted(int(m.payload) for m in b.expect(5)) == list(range(5))
    a.assert_no_message(0.2)


def test_v5_no_local(client):
    me = client(V5)
    me.subscribe("nl/t", options=SubscribeOptions(qos=1, noLocal=True))
    other = client(V5)
    other.subscribe("nl/t", 1)
    me.publish("nl/t", b"mine", qos=1)
    assert other.get().payload == b"mine"
    other.publish("nl/t", b"theirs", qos=1)
    assert [m.payload for m in me.expect(1)] == [b"theirs"]
    me.assert_no_message(0.3)
