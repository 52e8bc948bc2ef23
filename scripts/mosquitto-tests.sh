#!/usr/bin/env bash
# Runs Eclipse Mosquitto's own broker tests (test/broker/*.py) against `alicia broker`.
#
# Usage: scripts/mosquitto-tests.sh MOSQUITTO [TEST ...]
#
# MOSQUITTO is a copy of the public repository eclipse/mosquitto: a work tree (with test/broker/)
# or a bare git directory (such as the one the session's fetch tool gives); it is read, never
# written, and never belongs in this repository. TEST names tests to run (for example
# 01-connect-take-over.py or msg_sequence_test.py); default: every test Mosquitto's
# test/broker/test.py lists, plus msg_sequence_test.py.
#
# How: Mosquitto's harness (test/mosq_test.py) starts the broker as ../../src/mosquitto with
# `-v -p PORT` or `-v -c NN-test.conf`, then talks MQTT to it on localhost. This script copies
# test/ into a temporary folder, puts a small wrapper at src/mosquitto there that starts
# `alicia broker` instead (`-p PORT` -> `--bind 127.0.0.1 --port PORT`, `-c FILE` -> `-c FILE`:
# Alicia reads mosquitto.conf; a file's `port N`/`bind_address A` become `listener N A`, see
# below), and runs each test in its own process with a timeout. Nothing of
# Mosquitto is built: tests that need its C helpers (plugins, test clients in test/broker/c) or
# features Alicia does not have fail, and docs/conformance.md classifies every failure.
#
# Environment:
#   ALICIA_BIN     the alicia binary (default: target/release/alicia, built if missing)
#   TEST_TIMEOUT   seconds per test (default 60)
#   LOG_DIR        where each test's output and the broker logs go (default: a temp folder)
#   MOSQUITTO_SSL  "keep": use test/ssl as committed even if expired (default: remade, see below)
#
# Prints PASS/FAIL per test, then the totals. Exit status 0 if every test ran (whatever the
# results), 2 if the run could not be set up.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

die() { echo "mosquitto-tests.sh: $*" >&2; exit 2; }

[ $# -ge 1 ] || die "usage: scripts/mosquitto-tests.sh MOSQUITTO [TEST ...]"
SRC=$1
shift
command -v python3 >/dev/null || die "python3 is needed"
command -v timeout >/dev/null || die "coreutils 'timeout' is needed"

WORK=$(mktemp -d -t alicia-mosquitto-tests.XXXXXX)
LOG_DIR=${LOG_DIR:-$WORK/logs}
mkdir -p "$LOG_DIR"
TEST_TIMEOUT=${TEST_TIMEOUT:-60}

if [ -d "$SRC/test/broker" ]; then
    cp -r "$SRC/test" "$WORK/test"
elif git --git-dir="$SRC" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    git --git-dir="$SRC" archive HEAD test | tar -x -C "$WORK"
else
    die "$SRC is neither a Mosquitto work tree (test/broker/) nor its git directory"
fi
[ -f "$WORK/test/broker/test.py" ] || die "no test/broker/test.py in $SRC"

# Mosquitto's TLS test files (test/ssl) are made by its test/ssl/gen.sh and committed with a
# 5-year validity: those of fb9b1153 (Oct 2024) expired on 2025-02-23, after which every
# 08-ssl test fails with "certificate has expired", with Mosquitto itself as well (measured with
# Mosquitto 2.0.11). So when server.crt has expired, the copy's files are made again by that
# same gen.sh (new keys, the same names, subjects and CA layout). MOSQUITTO_SSL=keep keeps them.
SSL_NOTE=
if [ "${MOSQUITTO_SSL:-}" != keep ] && [ -f "$WORK/test/ssl/gen.sh" ] && command -v openssl >/dev/null &&
    ! openssl x509 -checkend 0 -noout -in "$WORK/test/ssl/server.crt" >/dev/null 2>&1; then
    (cd "$WORK/test/ssl" && sh ./gen.sh) >"$LOG_DIR/ssl-gen.log" 2>&1 ||
        die "test/ssl/gen.sh failed, see $LOG_DIR/ssl-gen.log"
    SSL_NOTE=" (test/ssl remade by its gen.sh: the committed certificates had expired)"
fi
REV=$( (git --git-dir="$SRC" rev-parse --short HEAD || git -C "$SRC" rev-parse --short HEAD) 2>/dev/null || echo unknown)

if [ -z "${ALICIA_BIN:-}" ]; then
    ALICIA_BIN=$ROOT/target/release/alicia
    if [ ! -x "$ALICIA_BIN" ]; then
        echo "==> cargo build --release -p alicia" >&2
        cargo build --release -p alicia >&2 || die "build failed"
    fi
fi
[ -x "$ALICIA_BIN" ] || die "$ALICIA_BIN is not executable"

# The wrapper Mosquitto's harness starts as ../../src/mosquitto.
mkdir -p "$WORK/src"
# Mosquitto's deprecated default-listener options `port N` and `bind_address A`, which 68 of the
# tests' configuration files use, are not supported by Alicia (it warns and ignores them, see
# crates/alicia-broker/src/auth/conf.rs). So that those tests reach what they test, the wrapper
# gives alicia a copy of such a file in which they become one `listener N A` line at the top:
# listener options before the first `listener` line belong to that default listener, as in
# Mosquitto. Every other line is passed on unchanged.
cat >"$WORK/src/default-listener.awk" <<'AWK'
/^[ \t]*port[ \t]/ { port = $2; next }
/^[ \t]*bind_address[ \t]/ { addr = $2; next }
{ lines[++n] = $0 }
END {
    if (port != "") print "listener " port (addr != "" ? " " addr : "")
    for (i = 1; i <= n; i++) print lines[i]
}
AWK
cat >"$WORK/src/mosquitto" <<EOF
#!/usr/bin/env bash
# Stands in for mosquitto: translates its command line for alicia broker. Mosquitto's own
# defaults where they show on the wire (the tests compare packets byte for byte): 20 messages in
# flight each way (CONNACK Receive Maximum 20), Topic Alias Maximum 10, and no Reason Strings. A
# configuration file's max_inflight_messages and max_topic_alias override them.
args=(--max-inflight 20 --receive-maximum 20 --max-topic-alias 10 --no-reason-strings)
while [ \$# -gt 0 ]; do
    case \$1 in
        -v | --verbose) ;;
        -d | --daemon) ;;
        -p | --port) args+=(--bind 127.0.0.1 --port "\$2"); shift ;;
        -c | --config-file)
            conf=\$2
            if grep -qE '^[[:space:]]*(port|bind_address)[[:space:]]' "\$conf"; then
                conf=\$(dirname "\$conf")/.alicia-\$(basename "\$conf")
                awk -f "$WORK/src/default-listener.awk" "\$2" >"\$conf"
            fi
            args+=(-c "\$conf")
            shift
            ;;
        *) echo "mosquitto wrapper: option \$1 not translated" >&2; exit 3 ;;
    esac
    shift
done
export ALICIA_LOG=\${ALICIA_LOG:-info}
exec "$ALICIA_BIN" broker "\${args[@]}" 2>>"$LOG_DIR/broker.log"
EOF
chmod +x "$WORK/src/mosquitto"

cd "$WORK/test/broker"
if [ $# -gt 0 ]; then
    TESTS=("$@")
else
    mapfile -t TESTS < <(
        echo msg_sequence_test.py
        python3 -c 'import sys; sys.argv=["x"]; exec(open("test.py").read().split("ptest.run_tests")[0]); [print(t[1][2:]) for t in tests]' 2>/dev/null
    )
    [ ${#TESTS[@]} -gt 1 ] || die "could not read the test list from test/broker/test.py"
fi

echo "==> Mosquitto $REV test/broker against $ALICIA_BIN; logs in $LOG_DIR$SSL_NOTE" >&2
pass=0
fail=0
failed=()
for t in "${TESTS[@]}"; do
    [ -f "$t" ] || { echo "SKIP $t (not in this Mosquitto version)"; continue; }
    log="$LOG_DIR/${t%.py}.log"
    echo "=== $t" >>"$LOG_DIR/broker.log"
    # Each test runs in a session of its own, so it and every broker it started can be ended
    # together (by that session's id) if it hangs or leaves one running.
    setsid python3 "./$t" >"$log" 2>&1 &
    pid=$!
    status=
    for _ in $(seq $((TEST_TIMEOUT * 10))); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" && status=0 || status=$?
            break
        fi
        sleep 0.1
    done
    if [ -z "$status" ]; then
        echo "timed out after ${TEST_TIMEOUT}s" >>"$log"
        status=124
    fi
    kill -TERM -- "-$pid" 2>/dev/null || true
    sleep 0.2
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$status" = 0 ]; then
        echo "PASS $t"
        pass=$((pass + 1))
    else
        echo "FAIL $t"
        fail=$((fail + 1))
        failed+=("$t")
    fi
done
echo
echo "Mosquitto $REV test/broker against alicia: $pass passed, $fail failed$SSL_NOTE"
for t in "${failed[@]}"; do echo "  failed: $t"; done
exit 0
