"""Helpers for tests of `alicia up` and its services: tokens as the gateway mints them, logins
with the passwords `alicia init` wrote, envelopes, and a fixture that starts `alicia up` on
free ports in a temporary home."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

import brokers
from pahoclient import Client


def hs256(secret: bytes, claims: dict) -> str:
    """A JWT made with Python's standard library, independently of Alicia's code."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def device_token(home: Path, device: str) -> str:
    """A gateway token for `device` (what POST /auth/device answers), minted with the home's key."""
    secret = bytes.fromhex((home / "keys" / "jwt.key").read_text().strip())
    now = int(time.time())
    return hs256(secret, {"sub": device, "iss": "alicia-gateway", "aud": "alicia-broker", "iat": now, "nbf": now,
                          "exp": now + 600})


def password(home: Path, user: str) -> str:
    return (home / "secrets" / f"{user}.password").read_text().strip()


def login(x, home: Path, user: str = "cli") -> Client:
    """A paho MQTT 5 client logged in as a core service user."""
    c = Client(x, client_id=f"{user}-{uuid.uuid4().hex[:6]}")
    c.c.username_pw_set(user, password(home, user))
    c.connect()
    return c


def now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def envelope(source: str, destination: str, message_type: str, data: dict, **fields) -> dict:
    return {"message_id": str(uuid.uuid4()), "source": source, "destination": destination,
            "message_type": message_type, "priority": "normal", "ttl": 30, "timestamp": now(),
            "payload": {"data": data}, **fields}


@pytest.fixture
def up(tmp_path):
    """(home, start): `start()` runs `alicia up` in the home (again after a stop) and returns it."""
    home = tmp_path / "home"
    started = []

    def start(*extra: str):
        x = brokers.start_alicia(tmp_path, ["--home", str(home), *extra], subcommand="up")
        started.append(x)
        return x

    yield home, start
    for x in started:
        x.stop()
