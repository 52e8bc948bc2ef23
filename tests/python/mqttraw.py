"""Hand-written MQTT 3.1.1 / 5.0 packet bytes for raw-socket tests.

Independent of the broker's own codec: everything here follows the OASIS specifications
directly, so tests can send packets that no well-behaved client library would produce
(malformed lengths, QoS 3, topic alias 0, ...) and read exactly what the server answers.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

# Packet types.
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = (
    8, 9, 10, 11, 12, 13, 14, 15)

PACKET_NAMES = {
    1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
    7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
    12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH",
}

# MQTT 5 property identifiers and their wire types.
PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SERVER_KEEP_ALIVE = 0x13
WILL_DELAY_INTERVAL = 0x18
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A

_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
PROPERTY_TYPES = {
    0x01: _BYTE, 0x02: _U32, 0x03: _STR, 0x08: _STR, 0x09: _BIN, 0x0B: _VARINT,
    0x11: _U32, 0x12: _STR, 0x13: _U16, 0x15: _STR, 0x16: _BIN, 0x17: _BYTE,
    0x18: _U32, 0x19: _BYTE, 0x1A: _STR, 0x1C: _STR, 0x1F: _STR, 0x21: _U16,
    0x22: _U16, 0x23: _U16, 0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR, 0x27: _U32,
    0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}
# Properties that may appear more than once; parsed into lists.
MULTI_PROPERTIES = {USER_PROPERTY, SUBSCRIPTION_IDENTIFIER}


# ---------------------------------------------------------------------------------------
# Encoding primitives


def varint(n: int) -> bytes:
    """Variable Byte Integer."""
    assert 0 <= n <= 268_435_455
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def u16(n: int) -> bytes:
    return struct.pack(">H", n)


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def binary(b: bytes) -> bytes:
    return u16(len(b)) + b


def string(s: str | bytes) -> bytes:
    return binary(s.encode() if isinstance(s, str) else s)


def properties(props: list[tuple[int, object]] | None) -> bytes:
    """MQTT 5 property block: a list of (identifier, value) pairs, duplicates allowed."""
    body = bytearray()
    for ident, value in props or []:
        kind = PROPERTY_TYPES[ident]
        body += varint(ident)
        if kind == _BYTE:
            body.append(value)
        elif kind == _U16:
            body += u16(value)
        elif kind == _U32:
            body += u32(value)
        elif kind == _VARINT:
            body += varint(value)
        elif kind == _STR:
            body += string(value)
        elif kind == _BIN:
            body += binary(value)
        else:
            body += string(value[0]) + string(value[1])
    return varint(len(body)) + bytes(body)


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + body


# ---------------------------------------------------------------------------------------
# Packet builders (version 4 = MQTT 3.1.1, 5 = MQTT 5.0)


def connect(client_id: str = "", version: int = 4, clean: bool = True, keepalive: int = 30,
            props=None, will: dict | None = None, username: str | None = None,
            password: bytes | None = None, reserved_flag: bool = False) -> bytes:
    flags = 0x02 if clean else 0
    if reserved_flag:
        flags |= 0x01
    payload = string(client_id)
    if will is not None:
        flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
        if version == 5:
            payload += properties(will.get("props"))
        payload += string(will["topic"]) + binary(will.get("payload", b""))
    if username is not None:
        flags |= 0x80
        payload += string(username)
    if password is not None:
        flags |= 0x40
        payload += binary(password)
    var = string("MQTT") + bytes([version, flags]) + u16(keepalive)
    if version == 5:
        var += properties(props)
    return packet(CONNECT, 0, var + payload)


def publish(topic: str | bytes, payload: bytes = b"", qos: int = 0, retain: bool = False,
            dup: bool = False, packet_id: int | None = None, version: int = 4,
            props=None) -> bytes:
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = string(topic)
    if qos > 0:
        body += u16(packet_id if packet_id is not None else 1)
    elif packet_id is not None:
        body += u16(packet_id)
    if version == 5:
        body += properties(props)
    return packet(PUBLISH, flags, body + payload)


def ack(ptype: int, packet_id: int, version: int = 4, reason: int | None = None) -> bytes:
    """PUBACK / PUBREC / PUBREL / PUBCOMP."""
    body = u16(packet_id)
    if version == 5 and reason is not None:
        body += bytes([reason])
    return packet(ptype, 0x02 if ptype == PUBREL else 0, body)


def subscribe(packet_id: int, filters: list[tuple[str, int]], version: int = 4, props=None,
              flags: int = 0x02) -> bytes:
    """filters: (filter, options byte); for 3.1.1 the options byte is the QoS."""
    body = u16(packet_id)
    if version == 5:
        body += properties(props)
    for topic_filter, options in filters:
        body += string(topic_filter) + bytes([options])
    return packet(SUBSCRIBE, flags, body)


def unsubscribe(packet_id: int, filters: list[str], version: int = 4) -> bytes:
    body = u16(packet_id)
    if version == 5:
        body += properties(None)
    for topic_filter in filters:
        body += string(topic_filter)
    return packet(UNSUBSCRIBE, 0x02, body)


def pingreq() -> bytes:
    return packet(PINGREQ, 0, b"")


def disconnect(version: int = 4, reason: int | None = None, props=None) -> bytes:
    if version == 5 and (reason is not None or props):
        return packet(DISCONNECT, 0, bytes([reason or 0]) + properties(props))
    return packet(DISCONNECT, 0, b"")


# ---------------------------------------------------------------------------------------
# Decoding


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated packet")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def varint(self) -> int:
        value, mult = 0, 1
        for _ in range(4):
            b = self.byte()
            value += (b & 0x7F) * mult
            if not b & 0x80:
                return value
            mult *= 128
        raise ValueError("bad variable byte integer")

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        return self.binary().decode("utf-8")

    def properties(self) -> dict:
        length = self.varint()
        sub = Reader(self.take(length))
        out: dict = {}
        while sub.remaining():
            ident = sub.varint()
            kind = PROPERTY_TYPES[ident]
            if kind == _BYTE:
                value = sub.byte()
            elif kind == _U16:
                value = sub.u16()
            elif kind == _U32:
                value = sub.u32()
            elif kind == _VARINT:
                value = sub.varint()
            elif kind == _STR:
                value = sub.string()
            elif kind == _BIN:
                value = sub.binary()
            else:
                value = (sub.string(), sub.string())
            if ident in MULTI_PROPERTIES:
                out.setdefault(ident, []).append(value)
            else:
                assert ident not in out, f"property {ident:#x} sent twice"
                out[ident] = value
        return out


@dataclass
class Packet:
    type: int
    flags: int
    body: bytes
    wire_size: int
    # Filled by parse() depending on type.
    reason: int | None = None
    session_present: bool | None = None
    props: dict = field(default_factory=dict)
    packet_id: int | None = None
    topic: str | None = None
    payload: bytes | None = None
    reasons: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return PACKET_NAMES.get(self.type, f"type{self.type}")

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 3

    @property
    def retain(self) -> bool:
        return bool(self.flags & 1)

    @property
    def dup(self) -> bool:
        return bool(self.flags & 8)

    def __repr__(self) -> str:
        extra = ""
        if self.reason is not None:
            extra += f" reason={self.reason:#04x}"
        if self.topic is not None:
            extra += f" topic={self.topic!r} payload={self.payload!r} qos={self.qos}"
        if self.props:
            extra += f" props={self.props}"
        return f"<{self.name}{extra}>"


def parse(ptype: int, flags: int, body: bytes, version: int, wire_size: int) -> Packet:
    p = Packet(ptype, flags, body, wire_size)
    r = Reader(body)
    if ptype == CONNACK:
        p.session_present = bool(r.byte() & 1)
        p.reason = r.byte()
        if version == 5 and r.remaining():
            p.props = r.properties()
    elif ptype == PUBLISH:
        p.topic = r.string()
        if p.qos:
            p.packet_id = r.u16()
        if version == 5:
            p.props = r.properties()
        p.payload = r.take(r.remaining())
    elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        p.packet_id = r.u16()
        if version == 5 and r.remaining():
            p.reason = r.byte()
            if r.remaining():
                p.props = r.properties()
        else:
            p.reason = 0
    elif ptype in (SUBACK, UNSUBACK):
        p.packet_id = r.u16()
        if version == 5:
            p.props = r.properties()
        p.reasons = list(r.take(r.remaining()))
    elif ptype == DISCONNECT:
        p.reason = r.byte() if r.remaining() else 0
        if r.remaining():
            p.props = r.properties()
    return p


# ---------------------------------------------------------------------------------------
# A raw socket client


class Closed(Exception):
    """The server closed the connection."""


class RawClient:
    """A TCP connection speaking hand-made MQTT. Every read has a deadline."""

    def __init__(self, host: str, port: int, version: int = 4, timeout: float = 5.0):
        self.version = version
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        # Packets read while waiting for another kind (e.g. retained PUBLISHes before a SUBACK).
        self.stash: list[Packet] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """Send, tolerating a connection the server already closed."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self) -> None:
        """Close with a TCP reset: the peer sees the connection drop abruptly."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from server before the deadline")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout as e:
            raise TimeoutError("no data from server before the deadline") from e
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise Closed()
        self.buf += chunk

    def read(self, timeout: float = 5.0) -> Packet:
        """Next packet; raises Closed on EOF and TimeoutError on deadline."""
        if self.stash:
            return self.stash.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            pkt = self._take_packet()
            if pkt is not None:
                return pkt
            if self.eof:
                raise Closed()
            self._fill(deadline)

    def _take_packet(self) -> Packet | None:
        if len(self.buf) < 2:
            return None
        length, mult, i = 0, 1, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            length += (b & 0x7F) * mult
            i += 1
            if not b & 0x80:
                break
            mult *= 128
            if i > 4:
                raise ValueError("server sent a bad remaining length")
        if len(self.buf) < i + length:
            return None
        first = self.buf[0]
        body = bytes(self.buf[i:i + length])
        del self.buf[:i + length]
        return parse(first >> 4, first & 0x0F, body, self.version, i + length)

    def expect(self, ptype: int, timeout: float = 5.0) -> Packet:
        pkt = self.read(timeout)
        assert pkt.type == ptype, f"expected {PACKET_NAMES[ptype]}, got {pkt!r}"
        return pkt

    def wait_closed(self, timeout: float = 5.0) -> list[Packet]:
        """Read until the server closes; return the packets it sent before closing."""
        deadline = time.monotonic() + timeout
        got: list[Packet] = []
        while True:
            try:
                got.append(self.read(max(0.0, deadline - time.monotonic())))
            except Closed:
                return got
            except TimeoutError:
                raise AssertionError(
                    f"server did not close the connection within {timeout}s "
                    f"(received {got!r})") from None

    # Conveniences -----------------------------------------------------------------------

    def handshake(self, client_id: str = "", clean: bool = True, keepalive: int = 30,
                  props=None, will=None, expect_reason: int = 0) -> Packet:
        self.send(connect(client_id, self.version, clean, keepalive, props, will))
        ack_pkt = self.expect(CONNACK)
        assert ack_pkt.reason == expect_reason, f"CONNACK {ack_pkt!r}"
        return ack_pkt

    def sub(self, filters: list[tuple[str, int]], packet_id: int = 1, props=None) -> list[int]:
        self.send(subscribe(packet_id, filters, self.version, props))
        held: list[Packet] = []
        while True:
            pkt = self.read()
            if pkt.type == SUBACK:
                assert pkt.packet_id == packet_id
                self.stash = held + self.stash
                return pkt.reasons
            held.append(pkt)
