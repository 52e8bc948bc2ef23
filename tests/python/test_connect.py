"""CONNECT / CONNACK: session present, clean start, client identifiers, capabilities."""

import mqttraw as r
from pahoclient import V5, V311, PacketTypes, Properties, prop, unique_id


def test_connect_clean(client, protocol):
    c = client(protocol)
    assert c.connack.reason_code == 0
    assert c.connack.session_present is False


def test_v311_session_present(client):
    cid = unique_id("sp3")
    c = client(V311, cid, clean=False)
    assert c.connack.session_present is False, "no session existed yet"
    c.subscribe("sp/t", 1)
    c.disconnect()
    c = client(V311, cid, clean=False)
    assert c.connack.session_present is True, "persistent session was kept"
    c.disconnect()
    c = client(V311, cid, clean=True)
    assert c.connack.session_present is False, "clean session must report no session"
    c.disconnect()
    c = client(V311, cid, clean=False)
    assert c.connack.session_present is False, "clean session discarded the old session"


def test_v5_session_present(client):
    cid = unique_id("sp5")
    c = client(V5, cid, clean=False, session_expiry=300)
    assert c.connack.session_present is False
    c.disconnect()
    c = client(V5, cid, clean=False, session_expiry=300)
    assert c.connack.session_present is True
    c.disconnect()
    c = client(V5, cid, clean=True, session_expiry=300)
    assert c.connack.session_present is False, "clean start discards the session"


def test_v5_session_expiry_zero_ends_session_at_disconnect(client):
    cid = unique_id("se0")
    c = client(V5, cid, clean=False)  # no Session Expiry Interval: 0
    c.subscribe("se0/t", 1)
    c.disconnect()
    c = client(V5, cid, clean=False)
    assert c.connack.session_present is False


def test_v5_session_expiry_set_to_zero_on_disconnect(client):
    cid = unique_id("sed")
    c = client(V5, cid, clean=False, session_expiry=300)
    c.subscribe("sed/t", 1)
    p = Properties(PacketTypes.DISCONNECT)
    p.SessionExpiryInterval = 0
    c.disconnect(properties=p)
    c = client(V5, cid, clean=False, session_expiry=300)
    assert c.connack.session_present is False, "DISCONNECT set the session expiry to 0"


def test_v5_assigned_client_identifier(client):
    a = client(V5, "")
    b = client(V5, "")
    ida = prop(a.connack.properties, "AssignedClientIdentifier")
    idb = prop(b.connack.properties, "AssignedClientIdentifier")
    assert ida and idb, "an empty client id must be answered with an Assigned Client Identifier"
    assert ida != idb
    # The clients with assigned ids work.
    a.subscribe("assigned/t", 1)
    b.publish("assigned/t", b"hi", qos=1)
    assert a.get().payload == b"hi"


def test_v311_empty_client_id_with_clean_session_accepted(client):
    a = client(V311, "", clean=True)
    a.subscribe("empty/t", 1)
    a.publish("empty/t", b"x", qos=1)
    assert a.get().payload == b"x"


def test_v311_empty_client_id_without_clean_session_refused(raw):
    c = raw(4)
    c.send(r.connect("", 4, clean=False))
    ack = c.expect(r.CONNACK)
    assert ack.reason == 0x02, f"expected CONNACK 0x02 identifier rejected, got {ack!r}"
    assert ack.session_present is False
    c.wait_closed(3)


def test_v5_connack_capabilities(raw):
    c = raw(5)
    ack = c.handshake(unique_id())
    p = ack.props
    assert p.get(r.MAXIMUM_QOS, 2) == 2, p
    assert p.get(r.RETAIN_AVAILABLE, 1) == 1, p
    assert p.get(r.WILDCARD_SUBSCRIPTION_AVAILABLE, 1) == 1, p
    assert p.get(r.SUBSCRIPTION_IDENTIFIER_AVAILABLE, 1) == 1, p
    assert p.get(r.SHARED_SUBSCRIPTION_AVAILABLE, 1) == 1, p
    assert p.get(r.TOPIC_ALIAS_MAXIMUM, 0) > 0, p
    assert 1 <= p.get(r.RECEIVE_MAXIMUM, 65535) <= 65535, p


def test_v5_server_keep_alive(make_broker):
    b = make_broker(max_keepalive=60)
    c = r.RawClient(b.host, b.port, 5)
    try:
        ack = c.handshake(unique_id(), keepalive=120)
        assert ack.props.get(r.SERVER_KEEP_ALIVE) == 60, ack
    finally:
        c.close()
    c = r.RawClient(b.host, b.port, 5)
    try:
        ack = c.handshake(unique_id(), keepalive=30)
        assert ack.props.get(r.SERVER_KEEP_ALIVE, 30) == 30, ack
    finally:
        c.close()


def test_unsupported_protocol_level(raw):
    c = raw(4)
    body = r.string("MQTT") + bytes([6, 0x02]) + r.u16(30) + r.string(unique_id())
    c.send(r.packet(r.CONNECT, 0, body))
    got = c.wait_closed(3)
    # 3.1.1: CONNACK 0x01 then close; 5.0: CONNACK 0x84 then close; closing at once is allowed.
    assert got == [] or (len(got) == 1 and got[0].type == r.CONNACK
                         and got[0].reason in (0x01, 0x84)), got


def test_first_packet_not_connect_closes(raw):
    c = raw(4)
    c.send(r.publish("early/t", b"x"))
    got = c.wait_closed(3)
    assert got == [] or (len(got) == 1 and got[0].type == r.CONNACK and got[0].reason != 0), got


def test_connect_reserved_flag_closes(raw, version):
    c = raw(version)
    c.send(r.connect(unique_id(), version, reserved_flag=True))
    got = c.wait_closed(3)
    assert got == [] or (len(got) == 1 and got[0].type == r.CONNACK and got[0].reason != 0), got


def test_several_clients(client, protocol):
    n = 4
    cs = [client(protocol) for _ in range(n)]
    cs[0].subscribe("many/t", 1)
    for i, c in enumerate(cs[1:]):
        c.publish("many/t", str(i).encode(), qos=1)
    got = sorted(m.payload for m in cs[0].expect(n - 1))
    assert got == [str(i).encode() for i in range(n - 1)]

