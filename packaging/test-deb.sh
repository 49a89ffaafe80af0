#!/usr/bin/env bash
# packaging/test-deb.sh [PACKAGE.deb] — the package test: builds the .deb (unless
# one is given), checks it with lintian, installs it with apt-get (which brings
# what it depends on), checks the packaged configuration, runs the installed
# binary as the mailmoat user on the packaged configuration's loopback ports,
# delivers a message to a test backend on 127.0.0.1:2526, then purges the
# package and shows nothing is left. Whatever fails, the package is purged and
# the servers it started are stopped. Needs root on Debian; changes this machine
# (run it on a test host, or in a fresh chroot: packaging/test-deb-chroot.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== %s\n' "$*"; }
fail() { echo "test-deb: $*" >&2; exit 1; }
# wait_for_port PORT WHAT PID: until something listens on 127.0.0.1:PORT, or
# fail when the process that should listen died or 30 seconds passed.
wait_for_port() {
    for _ in $(seq 1 300); do
        (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || fail "$2 exited before listening on 127.0.0.1:$1"
        sleep 0.1
    done
    fail "$2 is not listening on 127.0.0.1:$1 after 30 s"
}
port_is_free() { ! (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

deb="${1:-}"
if [ -z "$deb" ]; then
    step "build"
    bash packaging/build-deb.sh
    deb=$(ls -t target/debian/mailmoat_*.deb | head -1)
fi
deb=$(realpath "$deb")
export DEBIAN_FRONTEND=noninteractive
# The system's interpreter, with the test backend from Debian: a python3 earlier
# on PATH (pyenv, a venv) has neither.
python=/usr/bin/python3
need=()
command -v lintian >/dev/null || need+=(lintian)
command -v man >/dev/null || need+=(man-db)
[ -x "$python" ] || need+=(python3)
{ [ -x "$python" ] && "$python" -c 'import aiosmtpd' 2>/dev/null; } || need+=(python3-aiosmtpd)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
for port in 2525 2526; do
    port_is_free "$port" || fail "127.0.0.1:$port is taken; stop what listens there first"
done
logs=$(mktemp -d "${TMPDIR:-/tmp}/mailmoat-deb-test.XXXXXX")
serve= backend=
cleanup() {
    status=$?
    [ -z "$serve" ] || kill "$serve" 2>/dev/null || true
    [ -z "$backend" ] || kill "$backend" 2>/dev/null || true
    wait 2>/dev/null || true
    if [ "$status" != 0 ]; then
        for log in "$logs"/*.log; do
            [ -s "$log" ] && { echo "--- $log"; tail -20 "$log"; }
        done
        if dpkg -s mailmoat >/dev/null 2>&1; then
            echo "test-deb: failed; purging the package" >&2
            dpkg --purge mailmoat >/dev/null 2>&1 || true
        fi
    fi
    rm -rf "$logs"
    exit "$status"
}
trap cleanup EXIT

step "lintian $deb"
lintian --fail-on error --suppress-tags statically-linked-binary "$deb"
echo "lintian: no errors"

step "install"
# apt installs what the package depends on (adduser); dpkg -i alone would not.
apt-get install -y -q --no-install-recommends "$deb"
dpkg -L mailmoat | grep -E 'bin/mailmoat$|\.service$|man8|mailmoat.toml$|rules/10-attachments.toml$'
id mailmoat
ls -ld /etc/mailmoat /etc/mailmoat/mailmoat.toml /var/lib/mailmoat /var/lib/mailmoat/queue

step "check"
mailmoat --config /etc/mailmoat/mailmoat.toml check > /dev/null
man -l /usr/share/man/man8/mailmoat.8.gz > /dev/null && echo "man page renders"

step "serve as mailmoat, deliver one message"
"$python" -u -m aiosmtpd -n -l 127.0.0.1:2526 > "$logs/backend.log" 2>&1 &
backend=$!
wait_for_port 2526 "the test backend" "$backend"
setpriv --reuid=mailmoat --regid=mailmoat --init-groups \
    mailmoat --config /etc/mailmoat/mailmoat.toml serve > "$logs/serve.log" 2>&1 &
serve=$!
wait_for_port 2525 "mailmoat" "$serve"
echo "serving as $(stat -c %U /proc/$serve)"
"$python" - <<'PY'
import smtplib
with smtplib.SMTP("127.0.0.1", 2525, timeout=30) as s:
    s.sendmail("you@remote.test", ["alice@example.test"],
               "From: you@remote.test\r\nSubject: from the package\r\n\r\nIt works.\r\n")
PY
mailmoat --config /etc/mailmoat/mailmoat.toml queue wait --timeout 30s
# The queue is empty once the backend said 250; its log is written as it reads.
for _ in $(seq 1 100); do
    grep -q "Subject: from the package" "$logs/backend.log" && break
    sleep 0.1
done
grep -q "Subject: from the package" "$logs/backend.log" \
    || fail "the backend did not receive the message; queue: $(mailmoat --config /etc/mailmoat/mailmoat.toml queue list 2>&1)"
echo "the backend received the message"
kill "$serve"; wait "$serve" || true; serve=
kill "$backend"; wait "$backend" 2>/dev/null || true; backend=

step "dpkg --purge"
dpkg --purge mailmoat
left=0
for path in /usr/bin/mailmoat /etc/mailmoat /var/lib/mailmoat /lib/systemd/system/mailmoat.service \
            /usr/lib/systemd/system/mailmoat.service; do
    if [ -e "$path" ]; then echo "left behind: $path"; left=1; fi
done
if getent passwd mailmoat >/dev/null; then echo "left behind: user mailmoat"; left=1; fi
if dpkg -s mailmoat >/dev/null 2>&1; then echo "left behind: package state"; left=1; fi
[ "$left" = 0 ] || fail "the purge left files behind"
echo "purged: nothing left"
