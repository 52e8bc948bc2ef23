#!/usr/bin/env bash
# Installs Home Assistant Core into a virtual environment outside the repository, for the tests
# that drive a real Home Assistant (tests/python/hakit.py). Idempotent: when the venv already
# holds this exact install it only says so (well under a second).
#
#   scripts/install-ha.sh            # installs into ${ALICIA_HA_VENV:-$HOME/.cache/alicia/ha-venv}
#   ALICIA_HA_VENV=/some/dir scripts/install-ha.sh
#
# Prints the venv's path on its last line of stdout (progress goes to stderr).
#
# Why these pins:
# - homeassistant 2024.3.3 is the newest release whose dependencies install on Python 3.11
#   (2024.4 and later require 3.12).
# - It is installed with the constraints file that ships inside its own wheel
#   (homeassistant/package_constraints.txt): without it pip picks newer aiohttp/yarl/... that
#   2024.3 does not run with.
# - josepy<2: HA's http forwarded-headers middleware imports hass_nabucasa on every request;
#   hass_nabucasa imports acme 2.8, which uses josepy's ComparableX509, gone in josepy 2. The
#   import error then turns every HTTP request into a 500.
# - HA installs an integration's requirements when it first loads it, from the network. The tests
#   run hass with --skip-pip so it never does: the requirements of every integration the test
#   configuration loads (the always-loaded defaults, onboarding's dependencies, mqtt) are
#   installed here instead, at the versions the constraints file pins.
set -euo pipefail

HA_VERSION=2024.3.3
VENV=${ALICIA_HA_VENV:-$HOME/.cache/alicia/ha-venv}
PYTHON=${ALICIA_HA_PYTHON:-python3}

# The integrations tests/python/hakit.py's configuration.yaml names (keep the two in step). HA
# also sets up its always-loaded defaults (bootstrap.DEFAULT_INTEGRATIONS...); the requirements of
# all of them and of their dependencies are read from their manifests after the core is installed.
HAKIT_INTEGRATIONS=(http api auth config onboarding websocket_api mqtt)
EXTRA_CONSTRAINTS=('josepy<2')

# What the stamp records: a venv with a different stamp (another version, or an install made by
# another revision of this script) is reinstalled.
SPEC="homeassistant==$HA_VERSION script: $(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
STAMP="$VENV/.alicia-ha-install"

say() { printf 'install-ha: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ -x "$VENV/bin/hass" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SPEC" ]; then
    say "Home Assistant $HA_VERSION already installed in $VENV"
    echo "$VENV"
    exit 0
fi

start=$(date +%s)

# --- Python ------------------------------------------------------------------------------------
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    say "no $PYTHON: set ALICIA_HA_PYTHON to a Python 3.11 or 3.12"
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)'; then
    say "Home Assistant $HA_VERSION needs Python 3.11 or 3.12; $PYTHON is $("$PYTHON" --version 2>&1)"
    exit 1
fi
# Debian's python3 ships venv's pip bootstrap (ensurepip) in a separate package.
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    minor=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    say "installing Debian package python$minor-venv"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y --no-install-recommends "python$minor-venv" \
        || { as_root apt-get update && as_root apt-get install -y --no-install-recommends "python$minor-venv"; }
fi

# --- venv ----------------------------------------------------------------------------------------
if [ -e "$VENV" ]; then
    say "replacing the incomplete or different install in $VENV"
    rm -rf "$VENV"
fi
mkdir -p "$(dirname "$VENV")"
say "creating the venv $VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say "downloading homeassistant $HA_VERSION for its constraints file"
"${PIP[@]}" download --quiet --no-deps --dest "$work" "homeassistant==$HA_VERSION"
wheel=$(ls "$work"/homeassistant-"$HA_VERSION"-*.whl)
"$VENV/bin/python" - "$wheel" "$work/constraints.txt" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    data = z.read("homeassistant/package_constraints.txt")
open(sys.argv[2], "wb").write(data)
PY
printf '%s\n' "${EXTRA_CONSTRAINTS[@]}" >> "$work/constraints.txt"

# pip with the constraints; its "Collecting" lines are the progress, its full output goes to a
# log shown when it fails.
pip_install() {
    local status
    set +e
    "${PIP[@]}" install --progress-bar off --constraint "$work/constraints.txt" "$@" 2>&1 \
        | tee -a "$work/pip.log" | grep --line-buffered -E '^(Collecting|Successfully installed)' >&2
    status=${PIPESTATUS[0]}
    set -e
    if [ "$status" -ne 0 ]; then
        say "pip install $* failed ($status); the end of its output:"
        tail -n 40 "$work/pip.log" >&2
        exit 1
    fi
}

say "installing homeassistant $HA_VERSION (about 40 s)"
pip_install "$wheel" "${EXTRA_CONSTRAINTS[@]}"

# What HA would pip-install at run time for the integrations the tests set up (hakit.py runs hass
# with --skip-pip, so it never installs anything itself).
"$VENV/bin/python" - "$work/requirements.txt" "${HAKIT_INTEGRATIONS[@]}" <<'PY'
import json, sys
from pathlib import Path
import homeassistant.components as components
from homeassistant import bootstrap
from homeassistant.requirements import DISCOVERY_INTEGRATIONS

roots = set(sys.argv[2:]) | bootstrap.CORE_INTEGRATIONS | bootstrap.DEFAULT_INTEGRATIONS
roots |= bootstrap.LOGGING_INTEGRATIONS - {"sentry"}  # sentry only when configured
if "mqtt" in roots:  # the entity domains MQTT discovery may set up
    # Loaded as a lone file: importing the package would import paho, not installed yet.
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "mqtt_const", Path(components.__path__[0]) / "mqtt" / "const.py")
    mqtt_const = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mqtt_const)
    roots |= {str(p) for p in mqtt_const.PLATFORMS}
base = Path(components.__path__[0])
seen, todo, reqs = set(), sorted(roots), set()
while todo:
    domain = todo.pop()
    if domain in seen:
        continue
    seen.add(domain)
    manifest = json.loads((base / domain / "manifest.json").read_text())
    reqs.update(manifest.get("requirements", []))
    # What homeassistant.requirements checks before setting an integration up: its
    # dependencies, its after_dependencies (imported when present, e.g. analytics imports
    # recorder) and the discovery integrations its manifest uses (a "zeroconf" key...).
    todo.extend(manifest.get("dependencies", []) + manifest.get("after_dependencies", []))
    todo.extend(d for d, keys in DISCOVERY_INTEGRATIONS.items() if any(k in manifest for k in keys))
Path(sys.argv[1]).write_text("".join(f"{r}\n" for r in sorted(reqs)))
print(f"install-ha: {len(seen)} integrations need: {' '.join(sorted(reqs))}", file=sys.stderr)
PY
say "installing the integrations' requirements"
pip_install -r "$work/requirements.txt"

version=$("$VENV/bin/python" -c 'import homeassistant.const as c, paho.mqtt, josepy; print(c.__version__)')
if [ "$version" != "$HA_VERSION" ]; then
    say "the venv holds homeassistant $version, not $HA_VERSION"
    exit 1
fi

echo "$SPEC" > "$STAMP"
say "installed Home Assistant $HA_VERSION in $VENV in $(($(date +%s) - start)) s"
echo "$VENV"
