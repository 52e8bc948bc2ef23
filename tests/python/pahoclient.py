"""A synchronous test wrapper around a paho-mqtt 2.x client.

Each wrapper runs paho's network thread (loop_start) with automatic reconnects disabled, so a
session takeover cannot ping-pong, and turns callbacks into events and queues that tests wait
on with deadlines.
"""

from __future__ import annotations

import itertools
import queue
import socket
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
TIMEOUT = 5.0

_ids = itertools.count(1)


def unique_id(prefix: str = "t") -> str:
    return f"{prefix}-{next(_ids)}-{int(time.time() * 1000) % 100000}"


def props(packet_type: int, **values) -> Properties:
    """Properties(PacketTypes.X) with attributes set, e.g. props(PUBLISH, ContentType='x')."""
    p = Properties(packet_type)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def publish_props(**values) -> Properties:
    return props(PacketTypes.PUBLISH, **values)


def prop(message_or_props, name, default=None):
    """A property of a received message (or Properties object), or default if absent."""
    if isinstance(message_or_props, Properties):
        p = message_or_props
    else:
        p = getattr(message_or_props, "properties", None)
    if p is None:
        return default
    return getattr(p, name, default)


@dataclass
class Connack:
    session_present: bool
    reason_code: int
    properties: Properties | None


class Client:
    def __init__(self, broker, client_id: str | None = None, protocol: int = V5,
                 clean: bool = True, keepalive: int = 30):
        self.broker = broker
        self.protocol = protocol
        self.clean = clean
        self.keepalive = keepalive
        self.client_id = unique_id() if client_id is None else client_id
        kwargs = {}
        if protocol == V311:
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                             client_id=self.client_id, protocol=protocol,
                             reconnect_on_failure=False, **kwargs)
        self.messages: queue.Queue = queue.Queue()
        self.connack: Connack | None = None
        self._connected = threading.Event()
        self._disconnected = threading.Event()
        self.disconnect_reason = None
        self.disconnect_props = None
        self._acks: dict[int, tuple] = {}
        self._ack_cv = threading.Condition()
        self._started = False
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe

    # Callbacks ----------------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = Connack(bool(flags.session_present), int(reason_code.value), properties)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_reason = reason_code
        self.disconnect_props = properties
        self._disconnected.set()

    def _on_message(self, client, userdata, message):
        self.messages.put(message)

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties):
        with self._ack_cv:
            self._acks[mid] = ([int(rc.value) for rc in reason_code_list], properties)
            self._ack_cv.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, reason_code_list, properties):
        with self._ack_cv:
            self._acks[mid] = ([int(rc.value) for rc in reason_code_list], properties)
            self._ack_cv.notify_all()

    # Actions ------------------------------------------------------------------------------

    def will_set(self, topic, payload=b"", qos=0, retain=False, properties=None):
        self.c.will_set(topic, payload, qos, retain, properties)
        return self

    def connect(self, session_expiry: int | None = None, properties: Properties | None = None,
                expect_reason: int | None = 0, timeout: float = TIMEOUT) -> Connack:
        kwargs = {}
        if self.protocol == V5:
            kwargs["clean_start"] = self.clean
            p = properties
            if session_expiry is not None:
                p = p or Properties(PacketTypes.CONNECT)
                p.SessionExpiryInterval = session_expiry
            kwargs["properties"] = p
        self.c.connect(self.broker.host, self.broker.port, keepalive=self.keepalive, **kwargs)
        self.c.loop_start()
        self._started = True
        if not self._connected.wait(timeout):
            raise AssertionError(f"{self.client_id}: no CONNACK within {timeout}s")
        if expect_reason is not None:
            assert self.connack.reason_code == expect_reason, \
                f"{self.client_id}: CONNACK reason {self.connack.reason_code:#x}"
        return self.connack

    def _wait_ack(self, mid: int, timeout: float):
        deadline = time.monotonic() + timeout
        with self._ack_cv:
            while mid not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.client_id}: no ack for mid {mid}")
                self._ack_cv.wait(left)
            return self._acks.pop(mid)

    def subscribe(self, topic, qos: int = 0, options: SubscribeOptions | None = None,
                  properties: Properties | None = None, timeout: float = TIMEOUT) -> list[int]:
        """Subscribe and wait for SUBACK; returns the reason codes (granted QoS)."""
        if isinstance(topic, list):
            rc, mid = self.c.subscribe(topic, properties=properties)
        elif options is not None:
            rc, mid = self.c.subscribe((topic, options), properties=properties)
        else:
            rc, mid = self.c.subscribe(topic, qos, properties=properties)
        assert rc == MQTTErrorCode.MQTT_ERR_SUCCESS, rc
        return self._wait_ack(mid, timeout)[0]

    def subscribe_props(self, topic, **kw):
        return self.subscribe(topic, **kw)

    def unsubscribe(self, topic, timeout: float = TIMEOUT) -> list[int]:
        rc, mid = self.c.unsubscribe(topic)
        assert rc == MQTTErrorCode.MQTT_ERR_SUCCESS, rc
        return self._wait_ack(mid, timeout)[0]

    def publish(self, topic, payload=b"", qos: int = 0, retain: bool = False,
                properties: Properties | None = None, timeout: float = TIMEOUT):
        """Publish; for QoS 1/2 wait until the broker completed the flow."""
        info = self.c.publish(topic, payload, qos, retain, properties)
        assert info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS, f"publish failed: {info.rc}"
        if qos > 0:
            info.wait_for_publish(timeout)
            assert info.is_published(), f"{self.client_id}: QoS {qos} publish not completed"
        return info

    def sync(self, timeout: float = TIMEOUT):
        """Round trip through the broker (a SUBACK), so everything sent before was processed."""
        self.subscribe(f"sync/{self.client_id}", 0, timeout=timeout)

    def get(self, timeout: float = TIMEOUT):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message within {timeout}s") from None

    def expect(self, n: int, timeout: float = TIMEOUT) -> list:
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            left = deadline - time.monotonic()
            try:
                out.append(self.messages.get(timeout=max(0.0, left)))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id}: got {len(out)} of {n} messages within {timeout}s: "
                    f"{[(m.topic, m.payload) for m in out]}") from None
        return out

    def assert_no_message(self, wait: float = 0.3):
        try:
            m = self.messages.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id}: unexpected message {m.topic!r} {m.payload!r}")

    def drain(self, wait: float = 0.2) -> list:
        out = []
        while True:
            try:
                out.append(self.messages.get(timeout=wait))
            except queue.Empty:
                return out

    def wait_disconnected(self, timeout: float = TIMEOUT):
        if not self._disconnected.wait(timeout):
            raise AssertionError(f"{self.client_id}: still connected after {timeout}s")
        return self.disconnect_reason

    @property
    def is_connected(self) -> bool:
        return self.c.is_connected() and not self._disconnected.is_set()

    def disconnect(self, reason: int | None = None, properties: Properties | None = None,
                   timeout: float = TIMEOUT):
        """Clean DISCONNECT, then wait until the loop thread ended."""
        if not self._started or self._disconnected.is_set():
            self._join()
            return
        rc = ReasonCode(PacketTypes.DISCONNECT, identifier=reason) if reason is not None else None
        self.c.disconnect(reasoncode=rc, properties=properties)
        self._disconnected.wait(timeout)
        self._join()

    def drop(self):
        """Close the TCP connection without DISCONNECT (an abrupt network failure)."""
        sock = self.c.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        # paho's thread now sees the connection lost and ends (no reconnects).
        self._disconnected.wait(TIMEOUT)
        self._join()

    def _join(self):
        thread = self.c._thread  # noqa: SLF001 - paho keeps no public handle on it
        if thread is not None and thread is not threading.current_thread():
            self.c._thread_terminate = True  # noqa: SLF001
            thread.join(TIMEOUT)

    def close(self):
        """Teardown: disconnect if still connected, never raise."""
        try:
            if self._started and not self._disconnected.is_set():
                self.disconnect(timeout=1.0)
        except Exception:  # noqa: BLE001
            pass
        self._join()


class ClientFactory:
    """Creates connected clients for a broker and closes them all at teardown."""

    def __init__(self, broker):
        self.broker = broker
        self.clients: list[Client] = []

    def __call__(self, protocol: int = V5, client_id: str | None = None, clean: bool = True,
                 connect: bool = True, keepalive: int = 30, session_expiry: int | None = None,
                 properties: Properties | None = None, broker=None) -> Client:
        c = Client(broker or self.broker, client_id, protocol, clean, keepalive)
        self.clients.append(c)
        if connect:
            c.connect(session_expiry=session_expiry, properties=properties)
        return c

    def close_all(self):
        for c in self.clients:
            c.close()


__all__ = [
    "Client", "ClientFactory", "Connack", "PacketTypes", "Properties", "ReasonCode",
    "SubscribeOptions", "V311", "V5", "TIMEOUT", "prop", "props", "publish_props", "unique_id",
]
