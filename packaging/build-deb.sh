#!/usr/bin/env bash
# packaging/build-deb.sh — builds target/debian/mailmoat_VERSION_ARCH.deb with
# cargo-deb (installed here when missing): the binary, the systemd unit, the
# configuration (paths under /var/lib/mailmoat) and the rules as conffiles,
# man pages and completions, the example rules and their fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
cargo build --release --locked
stage=target/debian-stage
rm -rf "$stage" && mkdir -p "$stage"
./target/release/mailmoat generate --out "$stage/man" >/dev/null
gzip -9n "$stage"/man/*.[58]
# The quick start's relative paths become the installed ones.
sed -e 's|^file = "recipients.txt"|file = "/etc/mailmoat/recipients.txt"|' \
    -e 's|^path = "var/queue"|path = "/var/lib/mailmoat/queue"|' \
    -e 's|^path = "var/db"|path = "/var/lib/mailmoat/store"|' \
    -e 's|^path = "../rules"|path = "/etc/mailmoat/rules"|' \
    -e 's|^path = "../quarantine"|path = "/var/lib/mailmoat/archive"|' \
    packaging/mailmoat.toml > "$stage/mailmoat.toml"
for key in 'file = "/etc/mailmoat/recipients.txt"' 'path = "/var/lib/mailmoat/queue"' \
           'path = "/var/lib/mailmoat/store"' 'path = "/etc/mailmoat/rules"' \
           'path = "/var/lib/mailmoat/archive"'; do
    grep -qF "$key" "$stage/mailmoat.toml" || { echo "build-deb: $key not set" >&2; exit 1; }
done
version=$(./target/release/mailmoat --version | cut -d' ' -f2)
maintainer=$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' Cargo.toml)
printf 'mailmoat (%s-1) unstable; urgency=medium\n\n  * Built from %s.\n\n -- %s  %s\n' \
    "$version" "$(git rev-parse --short HEAD 2>/dev/null || echo source)" "$maintainer" \
    "$(date -R -u -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)")" | gzip -9n > "$stage/changelog.gz"
# The release profile keeps line tables for backtraces; the package does not.
cargo deb --no-build --locked --strip "$@"
ls target/debian/*.deb
