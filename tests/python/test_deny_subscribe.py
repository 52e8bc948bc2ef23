"""`--deny-subscribe FILTER`: a SUBSCRIBE to exactly that filter is refused with 0x80."""

import pytest

from pahoclient import ClientFactory

DENIED = "test/nosubscribe"


@pytest.fixture
def denying_client(make_broker):
    factory = ClientFactory(make_broker(deny_subscribe=[DENIED, "deny/#"]))
    yield factory
    factory.close_all()


def test_denied_filter_gets_0x80(denying_client, protocol):
    s = denying_client(protocol)
    assert s.subscribe([(DENIED, 1), ("test/allowed", 1), ("deny/#", 2)]) == [0x80, 1, 0x80]
    p = denying_client(protocol)
    p.publish(DENIED, b"not for you", qos=1)
    p.publish("test/allowed", b"ok", qos=1)
    assert [m.payload for m in s.expect(1)] == [b"ok"]
    s.assert_no_message(0.2)
    assert s.is_connected, "a refused subscription does not end the connection"


def test_only_the_exact_filter_is_denied(denying_client, protocol):
    s = denying_client(protocol)
    # Filters that merely match the denied one, or are matched by it, are not refused.
    assert s.subscribe([("test/+", 1), ("#", 0), ("deny/x", 1)]) == [1, 0, 1]
    p = denying_client(protocol)
    p.publish(DENIED, b"via wildcard", qos=1)
    got = [s.get()] + s.drain(0.2)
    assert {m.payload for m in got} == {b"via wildcard"}
