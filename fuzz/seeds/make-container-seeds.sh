#!/usr/bin/env bash
# Makes the container targets' seeds with the real tools (the files are small
# and committed; run again to refresh): a program and a text in each format.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
printf 'MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xffprogram' > "$work/a.exe"
echo 'hello, notes' > "$work/notes.txt"
seed() { mkdir -p "container_$1"; cp "$2" "container_$1/$3"; }
pick() { mkdir -p "container_$1"; { printf "\\x$(printf %02x "$2")"; cat "$3"; } > "container_$1/$4"; }
(cd "$work" && 7z a -tzip -bd z.zip a.exe notes.txt >/dev/null && 7z a -t7z -bd s.7z a.exe notes.txt >/dev/null \
  && 7z a -t7z -bd -m0=ppmd p.7z notes.txt >/dev/null && tar -cf t.tar a.exe notes.txt \
  && gzip -kc notes.txt > n.gz && bzip2 -kc notes.txt > n.bz2 && xz -kc notes.txt > n.xz \
  && zstd -qc notes.txt > n.zst && lzip -kc notes.txt > n.lz && gcab -c -z c.cab a.exe notes.txt \
  && gcab -c u.cab notes.txt && genisoimage -quiet -no-pad -J -R -o i.iso a.exe notes.txt \
  && truncate -s 200K f.img && /usr/sbin/mkfs.fat f.img >/dev/null && MTOOLS_SKIP_CHECK=1 mcopy -i f.img a.exe notes.txt :: \
  && qemu-img convert -q -f raw -O vpc -o subformat=fixed f.img v.vhd \
  && ar rc a.a a.exe notes.txt && printf 'a.exe\nnotes.txt\n' | cpio -o -H newc --quiet > c.cpio)
seed zip "$work/z.zip" basic.zip
seed sevenz "$work/s.7z" lzma2.7z
seed sevenz "$work/p.7z" ppmd.7z
seed tar "$work/t.tar" basic.tar
seed cab "$work/c.cab" mszip.cab
seed cab "$work/u.cab" stored.cab
seed iso "$work/i.iso" joliet.iso
for n in 0:n.gz 1:n.bz2 2:n.xz 3:n.zst 4:n.lz; do pick compressed "${n%%:*}" "$work/${n#*:}" "${n#*:}"; done
pick disk 0 "$work/f.img" fat.img
pick disk 2 "$work/v.vhd" fixed.vhd
pick ar 0 "$work/a.a" lib.a
pick ar 1 "$work/c.cpio" files.cpio
