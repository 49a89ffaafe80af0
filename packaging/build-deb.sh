#!/usr/bin/env bash
# packaging/build-deb.sh [COMMIT] — builds target/debian/mailmoat_VERSION_ARCH.deb
# with cargo-deb (installed here when missing): the binary, the systemd unit, the
# configuration (paths under /var/lib/mailmoat) and the rules as conffiles, man
# pages and completions, the example rules and their fixtures.
#
# The package is built from a commit (HEAD unless one is given), exported to a
# directory of its own: local edits to the quick start's configuration or rules
# never reach the package or its man page. The export shares ./target, so only
# mailmoat itself is compiled again. Outside a git checkout (a source tarball)
# the tree is used as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
top=$(pwd)
mkdir -p target
if git rev-parse --git-dir >/dev/null 2>&1; then
    commit=$(git rev-parse --verify "${1:-HEAD}^{commit}")
    if ! git diff --quiet "$commit" -- 2>/dev/null; then
        echo "build-deb: building $(git rev-parse --short "$commit"); edits not in it are left out:" >&2
        git diff --stat "$commit" -- | sed 's/^/  /' >&2
    fi
    src=$(mktemp -d "${TMPDIR:-/tmp}/mailmoat-deb.XXXXXX")
    trap 'rm -rf "$src"' EXIT
    git archive "$commit" | tar -x -C "$src"
    ln -s "$top/target" "$src/target"
    built_from=$(git rev-parse --short "$commit")
    built_at=$(git log -1 --format=%ct "$commit")
else
    src=$top
    built_from=source
    built_at=$(date +%s)
fi
cd "$src"
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
    "$version" "$built_from" "$maintainer" "$(date -R -u -d "@$built_at")" \
    | gzip -9n > "$stage/changelog.gz"
# The package strips the symbols too (Debian policy; lintian).
cargo deb --no-build --locked --strip
ls "$top"/target/debian/*.deb
