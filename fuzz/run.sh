#!/usr/bin/env bash
# fuzz/run.sh — runs every fuzz target (or the ones named) for a while each, on
# stable Rust (cargo fuzz with --sanitizer none), seeded from fuzz/seeds/. Built
# with -O and the profile in Cargo.toml: mailmoat with debug assertions and
# overflow checks, mail-parser without its debug_assert!s, as it is shipped.
#
#   bash fuzz/run.sh [--seconds N] [TARGET ...]
#
# Targets: smtp_command relay_decision data_reader mime_analysis strip normalize,
# and one per container reader: container_zip container_rar container_sevenz
# container_compressed container_tar container_cab container_iso container_disk
# container_ole container_tnef container_ar (seeds: seeds/make-container-seeds.sh).
# A crash leaves its input in fuzz/artifacts/TARGET/; turn it into a regression
# test. Prints each target's last status line (executions, coverage).
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.cargo/bin:$PATH"
SECONDS_EACH=600
TARGETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_EACH="$2"; shift 2;;
    -h|--help) sed -n '2,10p' "$0"; exit 0;;
    *) TARGETS+=("$1"); shift;;
  esac
done
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(smtp_command relay_decision data_reader mime_analysis strip normalize
  container_zip container_rar container_sevenz container_compressed container_tar container_cab
  container_iso container_disk container_ole container_tnef container_ar)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz

seeds_of() {
  case "$1" in
    mime_analysis|strip|normalize) echo seeds/mime;;
    *) echo "seeds/$1";;
  esac
}

# Disc and disk images are large even when empty (ISO 9660 begins at 32 KiB).
max_len_of() {
  case "$1" in
    container_iso|container_disk) echo 262144;;
    *) echo 65536;;
  esac
}

for target in "${TARGETS[@]}"; do
  corpus="corpus/$target"
  mkdir -p "$corpus"
  cp -n "$(seeds_of "$target")"/* "$corpus"/ 2>/dev/null || true
  log="corpus/$target.log"
  echo "== $target: ${SECONDS_EACH}s"
  cargo fuzz run -O --sanitizer none "$target" "$corpus" -- \
    -max_total_time="$SECONDS_EACH" -max_len="$(max_len_of "$target")" -timeout=10 -print_final_stats=1 \
    > "$log" 2>&1 || { echo "$target FAILED:"; tail -40 "$log"; exit 1; }
  grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1
  grep -E 'stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb' "$log" || true
done
