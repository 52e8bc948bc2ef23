#!/usr/bin/env bash
# Runs the Eclipse Paho interoperability suites against `alicia broker`.
#
# The suites are not part of this repository. Put a copy of the public repository
# eclipse/paho.mqtt.testing in "$CONFORMANCE_DIR/paho.mqtt.testing", then:
#
#   CONFORMANCE_DIR=/path/to/dir scripts/conformance.sh [v311] [v5]
#
# The broker runs with the two settings the suites expect of any broker: Server Keep Alive 60
# (--max-keepalive 60) and a refused subscription to test/nosubscribe.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -z "${CONFORMANCE_DIR:-}" ] || [ ! -d "$CONFORMANCE_DIR/paho.mqtt.testing/interoperability" ]; then
    echo "CONFORMANCE_DIR must name a folder holding paho.mqtt.testing/ (the public repository" >&2
    echo "eclipse/paho.mqtt.testing, fetched separately and never committed here)." >&2
    exit 2
fi
runner=../shared/tools/conformance/run.sh
[ -f "$runner" ] || { echo "missing $runner (the project lead's shared tools)" >&2; exit 2; }

cargo build --release -p alicia
out=$(mktemp)
target/release/alicia broker --bind 127.0.0.1 --port 0 --sys-interval 0 \
    --max-keepalive 60 --deny-subscribe test/nosubscribe >"$out" 2>"$out.err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$out" "$out.err"' EXIT
for _ in $(seq 100); do
    grep -q 'mqtt listening on' "$out" && break
    sleep 0.1
done
port=$(sed -n 's/^mqtt listening on .*:\([0-9]*\)$/\1/p' "$out")
[ -n "$port" ] || { echo "broker did not start:" >&2; cat "$out.err" >&2; exit 1; }
bash "$runner" 127.0.0.1 "$port" "$@"
