#!/usr/bin/env bash
# packaging/test-deb.sh [PACKAGE.deb] — the package test: builds the .deb (unless
# one is given), checks it with lintian, installs it with dpkg -i on this
# machine, checks the packaged configuration, runs the installed binary as the
# mailmoat user on the packaged configuration's loopback ports, delivers a
# message to a test backend on 127.0.0.1:2526, then purges the package and
# shows nothing is left. Needs root on Debian; changes this machine (run it on a
# test host or in a chroot).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== %s\n' "$*"; }
deb="${1:-}"
if [ -z "$deb" ]; then
    step "build"
    bash packaging/build-deb.sh
    deb=$(ls -t target/debian/mailmoat_*.deb | head -1)
fi
deb=$(realpath "$deb")
export DEBIAN_FRONTEND=noninteractive
need=()
command -v lintian >/dev/null || need+=(lintian)
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import aiosmtpd' 2>/dev/null || need+=(python3-aiosmtpd)
[ ${#need[@]} -eq 0 ] || { apt-get update -q >/dev/null; apt-get install -y -q "${need[@]}" >/dev/null; }

step "lintian $deb"
lintian --fail-on error --suppress-tags statically-linked-binary "$deb"
echo "lintian: no errors"

step "dpkg -i"
dpkg -i "$deb"
dpkg -L mailmoat | grep -E 'bin/mailmoat$|\.service$|man8|mailmoat.toml$|rules/10-attachments.toml$'
id mailmoat
ls -ld /etc/mailmoat /etc/mailmoat/mailmoat.toml /var/lib/mailmoat /var/lib/mailmoat/queue

step "check"
mailmoat --config /etc/mailmoat/mailmoat.toml check > /dev/null
man -l /usr/share/man/man8/mailmoat.8.gz > /dev/null && echo "man page renders"

step "serve as mailmoat, deliver one message"
python3 -u -m aiosmtpd -n -l 127.0.0.1:2526 > /tmp/mailmoat-deb-backend.log 2>&1 &
backend=$!
setpriv --reuid=mailmoat --regid=mailmoat --init-groups \
    mailmoat --config /etc/mailmoat/mailmoat.toml serve > /tmp/mailmoat-deb-serve.log 2>&1 &
serve=$!
trap 'kill $serve $backend 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/2525) 2>/dev/null && break; sleep 0.1; done
echo "serving as $(stat -c %U /proc/$serve)"
python3 - <<'PY'
import smtplib
with smtplib.SMTP("127.0.0.1", 2525) as s:
    s.sendmail("you@remote.test", ["alice@example.test"],
               "From: you@remote.test\r\nSubject: from the package\r\n\r\nIt works.\r\n")
PY
mailmoat --config /etc/mailmoat/mailmoat.toml queue wait --timeout 30s
grep -q "Subject: from the package" /tmp/mailmoat-deb-backend.log
echo "the backend received the message"
kill "$serve"; wait "$serve" || true
kill "$backend"; wait "$backend" 2>/dev/null || true
trap - EXIT

step "dpkg --purge"
dpkg --purge mailmoat
left=0
for path in /usr/bin/mailmoat /etc/mailmoat /var/lib/mailmoat /lib/systemd/system/mailmoat.service; do
    if [ -e "$path" ]; then echo "left behind: $path"; left=1; fi
done
if getent passwd mailmoat >/dev/null; then echo "left behind: user mailmoat"; left=1; fi
if dpkg -s mailmoat >/dev/null 2>&1; then echo "left behind: package state"; left=1; fi
[ "$left" = 0 ] && echo "purged: nothing left"
exit "$left"
