#!/usr/bin/env bash
# packaging/test-deb-chroot.sh [RUNS] [PACKAGE.deb] — the package test on a fresh
# Debian 12 system: builds the .deb (unless one is given), makes a minimal
# bookworm chroot with debootstrap (kept in target/deb-chroot/bookworm.tar for
# the next time; each run unpacks a new one) and runs packaging/test-deb.sh in
# it RUNS times (default 1), each time on a clean copy. Needs root and Debian's
# mirror; changes nothing outside target/.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1}"
deb="${2:-}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if [ -z "$deb" ]; then
    bash packaging/build-deb.sh
    deb=$(ls -t target/debian/mailmoat_*.deb | head -1)
fi
deb=$(realpath "$deb")
command -v debootstrap >/dev/null || { apt-get update -q >/dev/null; apt-get install -y -q debootstrap >/dev/null; }
cache=target/deb-chroot
mkdir -p "$cache"
if [ ! -s "$cache/bookworm.tar" ]; then
    echo "== debootstrap bookworm (once)"
    base=$(mktemp -d "$PWD/$cache/base.XXXXXX")
    chmod 755 "$base"
    debootstrap --variant=minbase bookworm "$base" "$mirror" >/dev/null
    tar -C "$base" -cf "$cache/bookworm.tar" .
    rm -rf "$base"
fi
passed=0
for run in $(seq 1 "$runs"); do
    root=$(mktemp -d "$PWD/$cache/run.XXXXXX")
    tar -C "$root" -xf "$cache/bookworm.tar"
    # mktemp makes folders 0700: the chroot's / must let the mailmoat user through.
    chmod 755 "$root"
    mkdir -p "$root/test/packaging"
    cp packaging/test-deb.sh "$root/test/packaging/"
    cp "$deb" "$root/test/"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    mount -t proc proc "$root/proc"
    mount --bind /dev "$root/dev"
    status=0
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        bash /test/packaging/test-deb.sh "/test/$(basename "$deb")" > "$cache/run-$run.log" 2>&1 || status=$?
    umount "$root/dev" "$root/proc"
    rm -rf "$root"
    if [ "$status" = 0 ]; then
        passed=$((passed + 1)); echo "run $run: passed"
    else
        echo "run $run: FAILED ($cache/run-$run.log)"; tail -30 "$cache/run-$run.log"
    fi
done
echo "$passed of $runs runs passed in a fresh bookworm chroot"
[ "$passed" = "$runs" ]
