#!/usr/bin/env bash
# Runs the Eclipse Paho interoperability suites (MQTT 3.1.1 client_test.py, MQTT 5.0
# client_test5.py) against a freshly built `alicia broker`.
#
# Usage: CONFORMANCE_DIR=DIR scripts/conformance.sh [v311] [v5]      (default: both suites)
#
# Builds `alicia` in release mode, starts `alicia broker` on a free loopback port with the two
# settings the suites expect of any broker: Server Keep Alive 60 (--max-keepalive 60) and a
# refused subscription to test/nosubscribe. Runs ../shared/tools/conformance/run.sh against it
# (one test per process), stops the broker and prints the results. The suites are not part of
# this repository: they are read from $CONFORMANCE_DIR/paho.mqtt.testing.
#
# Environment (passed on to run.sh):
#   CONFORMANCE_DIR    required; holds paho.mqtt.testing/interoperability/
#   PAHO_TESTS         space-separated test names to run instead of all of them
#   PAHO_TEST_TIMEOUT  seconds allowed per test (default 60)
#   LOG_DIR            where the per-test logs and the broker's log go (default: a temp folder)
#   ALICIA_BIN         the alicia binary to run instead of building target/release/alicia
#   PAHO_RUNNER        the runner (default ../shared/tools/conformance/run.sh, which a git
#                      worktree outside /work/main must name: /work/shared/tools/conformance/run.sh)
#
# Exit status: 0 if every test that ran passed, 1 if some failed or the broker died during the
# run, 2 if the check could not be run. A full run takes about 70 s (3.1.1) plus about 6 min
# (5.0) after the build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runner=${PAHO_RUNNER:-../shared/tools/conformance/run.sh}

die() { echo "conformance.sh: $*" >&2; exit 2; }

for arg in "$@"; do
    case $arg in
        v311 | v5) ;;
        -h | --help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown suite '$arg' (usage: scripts/conformance.sh [v311] [v5])" ;;
    esac
done

if [ -z "${CONFORMANCE_DIR:-}" ] || [ ! -d "$CONFORMANCE_DIR/paho.mqtt.testing/interoperability" ]; then
    cat >&2 <<EOF
conformance.sh: the Paho interoperability suites were not found.
  CONFORMANCE_DIR=${CONFORMANCE_DIR:-<unset>}
  expected: \$CONFORMANCE_DIR/paho.mqtt.testing/interoperability/client_test.py and client_test5.py

Fetch the public repository eclipse/paho.mqtt.testing (for example with the fetch tool, which
gives a bare git directory, or 'git clone --bare https://github.com/eclipse/paho.mqtt.testing')
and unpack it OUTSIDE this repository, then point CONFORMANCE_DIR at the folder above it:

  export CONFORMANCE_DIR=/work/conformance
  mkdir -p "\$CONFORMANCE_DIR/paho.mqtt.testing"
  git --git-dir=<fetched git dir> archive HEAD | tar -x -C "\$CONFORMANCE_DIR/paho.mqtt.testing"

Never commit the suites' code here. See ../shared/tools/conformance/README.md.
EOF
    exit 2
fi
[ -f "$runner" ] || die "missing $runner (the project lead's shared tools)"
command -v python3 >/dev/null || die "python3 is needed to run the suites"
command -v timeout >/dev/null || die "coreutils 'timeout' is needed to run the suites"

export CONFORMANCE_DIR
export LOG_DIR=${LOG_DIR:-$(mktemp -d -t alicia-conformance.XXXXXX)}
mkdir -p "$LOG_DIR"

if [ -z "${ALICIA_BIN:-}" ]; then
    echo "==> cargo build --release -p alicia" >&2
    cargo build --release -p alicia >&2 || die "build failed"
    ALICIA_BIN=target/release/alicia
fi
[ -x "$ALICIA_BIN" ] || die "$ALICIA_BIN is not executable"

out="$LOG_DIR/broker.stdout"
log="$LOG_DIR/broker.log"
results="$LOG_DIR/results.txt"
pid=
stop_broker() {
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "conformance.sh: the broker did not stop within 10 s of SIGTERM; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    pid=
}
trap stop_broker EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$ALICIA_BIN" broker --bind 127.0.0.1 --port 0 --sys-interval 0 \
    --max-keepalive 60 --deny-subscribe test/nosubscribe >"$out" 2>"$log" &
pid=$!

# The broker prints "mqtt listening on 127.0.0.1:PORT" on stdout once it accepts connections.
port=
for _ in $(seq 200); do
    port=$(sed -n 's/^mqtt listening on 127\.0\.0\.1:\([0-9][0-9]*\)[[:space:]]*$/\1/p' "$out" | head -n 1)
    [ -n "$port" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null && status=0 || status=$?
        pid=
        echo "conformance.sh: the broker exited (status $status) before listening; its log:" >&2
        tail -n 30 "$log" >&2 || true
        exit 2
    fi
    sleep 0.05
done
[ -n "$port" ] || die "the broker did not print 'mqtt listening on 127.0.0.1:PORT' within 10 s (see $log)"
echo "==> alicia broker (pid $pid) listening on 127.0.0.1:$port; log: $log" >&2

bash "$runner" 127.0.0.1 "$port" "$@" | tee "$results"

broker_died=0
if ! kill -0 "$pid" 2>/dev/null; then
    broker_died=1
    wait "$pid" 2>/dev/null && status=0 || status=$?
    pid=
fi
stop_broker

echo
echo "==> Results (alicia broker on 127.0.0.1:$port; test logs and broker log in $LOG_DIR)"
grep -E '^(MQTT .*: [0-9]+ passed, [0-9]+ failed|  failed: |== .*(none of PAHO_TESTS|could not list))' "$results" || true
if [ "$broker_died" = 1 ]; then
    echo "The broker exited during the run (status $status); the end of its log:"
    tail -n 20 "$log" || true
    exit 1
fi
grep -qE '^MQTT .*: [0-9]+ passed, [0-9]+ failed' "$results" || { echo "No suite ran."; exit 2; }
if grep -qE '^MQTT .*: [0-9]+ passed, [1-9][0-9]* failed' "$results"; then
    exit 1
fi
exit 0
