#!/usr/bin/env bash
# bench/throughput.sh — mailmoat and Postfix side by side, in one run, with the
# smtp-source/smtp-sink harness (bench/harness/, from the shared benchmark kit).
#
#   bench/throughput.sh [--msgs N] [--reps N] [--no-postfix] [--csv FILE]
#                       [--baseline BIN] [--settings "S BYTES,..."] [--throughput-only]
#                       [--sender-auth] [--lossy-dns SHARE] [--dns-ttl SECONDS] [--scanners] [--metrics] [--instances]
#
# --baseline BIN runs a second mailmoat binary (an older build) beside this one,
# alternating with it at every setting, so a change is measured against what was
# there before in the same run ("baseline" in the table). --settings picks the
# settings (default "1 5120,10 5120,50 5120,50 102400"); --throughput-only skips the
# latency, idle-connection and disk figures. --sender-auth adds two instances that
# treat the load as coming from outside, with names from a dnsmasq on
# 127.0.0.1:5353 (SPF and DMARC records for the sender's domain, example.org):
# "untrusted" (sender authentication off) and "auth" (SPF, DKIM, DMARC, ARC on,
# results cached), so what verification costs per message is the difference.
# --lossy-dns SHARE (with --sender-auth) adds "auth-lossy" (2625 -> 2626): the
# same as "auth", resolving through bench/lossy-dns.py on 127.0.0.1:5300, which
# drops SHARE of the queries (0.5: half) in front of the dnsmasq. Both auth
# instances serve metrics (127.0.0.1:9195, :9196); the DNS queries each sent per
# message are printed, and bench/mail_from_latency.py times 200 MAIL FROMs from
# outside during each lossy run. --dns-ttl SECONDS sets the TTL of those records
# (default 300, as zones publish them; 1 makes them expire twice a run, so the
# figure is of refreshing through the lossy resolver, not of a warm cache).
# --scanners adds an instance ("scanners", 2575 -> 2576) that asks a clamd
# (a one-line signature database: nothing to download) and an rspamd, both
# started here on loopback ports, about every message. --metrics adds an
# instance ("metrics", 2585 -> 2586) with [metrics] listen on 127.0.0.1:9187,
# scraped every second during the runs. --instances starts a redis-server
# (127.0.0.1:6391) and an haproxy, and adds three systems, all with every
# mail-bomb limit on (set far above the load, so every message is counted):
# "local" (counters in memory, 2595 -> 2596), "redis" (the same counted in
# Redis, 2605 -> 2606; its Redis round trips per message are printed) and "pair"
# (two such instances behind haproxy with PROXY v2 on 2615 -> 2617/2618 -> 2616;
# its CPU is both instances' and haproxy's).
#
# Builds the release binary, starts mailmoat with a benchmark configuration
# (127.0.0.1:2535 -> smtp-sink on 127.0.0.1:2536, hosting example.com, spool flushed
# before every 250 as always, bench/rules/ doing the checks of the Postfix relay's
# header_checks and body_checks), runs the harness at c=1/10/50 with 5 KB and c=50 with
# 100 KB, then does the same with the reference Postfix relay (bench/harness/
# postfix-relay, 127.0.0.1:2525 -> 2526) and prints medians and ratios. Repetitions
# are the outer loop, so drifts of a shared machine spread over both systems.
# Then: p99 end-of-data -> 250 latency at c=50, resident memory with 1,000 idle
# connections, and the size of the spool and store after the runs.
#
# Needs root for apt-get (postfix, for smtp-source/smtp-sink) when they are missing.
# Not part of CI: timings on a shared machine are not tests.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
HARNESS="$REPO/bench/harness"
MSGS=5000; REPS=3; POSTFIX=1; CSV=""; BASELINE=""; ONLY_THROUGHPUT=0; SENDER_AUTH=0; SCANNERS=0; METRICS=0; INSTANCES=0; LOSSY=""; DNS_TTL=300
SETTINGS_ARG="1 5120,10 5120,50 5120,50 102400"
while [ $# -gt 0 ]; do
  case "$1" in
    --msgs) MSGS="$2"; shift 2;;
    --reps) REPS="$2"; shift 2;;
    --no-postfix) POSTFIX=0; shift;;
    --csv) CSV="$2"; shift 2;;
    --baseline) BASELINE="$(realpath "$2")"; shift 2;;
    --settings) SETTINGS_ARG="$2"; shift 2;;
    --throughput-only) ONLY_THROUGHPUT=1; shift;;
    --sender-auth) SENDER_AUTH=1; shift;;
    --lossy-dns) LOSSY="$2"; shift 2;;
    --dns-ttl) DNS_TTL="$2"; shift 2;;
    --scanners) SCANNERS=1; shift;;
    --metrics) METRICS=1; shift;;
    --instances) INSTANCES=1; shift;;
    -h|--help) sed -n '2,39p' "$0"; exit 0;;
    *) echo "unknown argument: $1" >&2; exit 2;;
  esac
done

need_apt=()
command -v smtp-source >/dev/null || need_apt+=(postfix postfix-pcre)
command -v ss >/dev/null || need_apt+=(iproute2)
[ "$SENDER_AUTH" = 0 ] || command -v dnsmasq >/dev/null || need_apt+=(dnsmasq-base)
[ "$SCANNERS" = 0 ] || command -v clamd >/dev/null || need_apt+=(clamav-daemon)
[ "$SCANNERS" = 0 ] || command -v rspamd >/dev/null || need_apt+=(rspamd)
[ "$INSTANCES" = 0 ] || command -v redis-server >/dev/null || need_apt+=(redis-server)
[ "$INSTANCES" = 0 ] || command -v haproxy >/dev/null || need_apt+=(haproxy)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_apt[@]}" >/dev/null
fi
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true

(cd "$REPO" && cargo build --release --quiet && cargo build --release --quiet --example eod_latency)
BIN="$REPO/target/release/mailmoat"
WORK="$(mktemp -d /tmp/mailmoat-bench.XXXXXX)"
[ -n "$CSV" ] || CSV="$WORK/results.csv"
MM_PID=""; BL_PID=""; UT_PID=""; SA_PID=""; SL_PID=""; LOSSY_PID=""; DNS_PID=""; SC_PID=""; CLAMD_PID=""; RSPAMD_PID=""; MT_PID=""; SCRAPER_PID=""; REDIS_PID=""; LOCAL_PID=""; SHARED_PID=""; PAIR_PID=""
cleanup() {
  [ -n "$PAIR_PID" ] && pkill -P "$PAIR_PID" 2>/dev/null || true
  for pid in "$UT_PID" "$SA_PID" "$SL_PID" "$LOSSY_PID" "$DNS_PID" "$SC_PID" "$CLAMD_PID" "$RSPAMD_PID" "$MT_PID" "$SCRAPER_PID" "$LOCAL_PID" "$SHARED_PID" "$PAIR_PID" "$REDIS_PID"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  done
  [ -n "$MM_PID" ] && kill "$MM_PID" 2>/dev/null && wait "$MM_PID" 2>/dev/null || true
  [ -n "$BL_PID" ] && kill "$BL_PID" 2>/dev/null && wait "$BL_PID" 2>/dev/null || true
  if [ "$POSTFIX" = 1 ] && command -v postfix >/dev/null; then
    bash "$HARNESS/postfix-relay/setup.sh" stop >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

cat > "$WORK/mailmoat.toml" <<CONF
[server]
listen = ["127.0.0.1:2535"]
hostname = "mx.bench.test"
# The load comes from one address.
max_connections = 4000
max_connections_per_ip = 4000
[relay]
hosted_domains = ["example.com"]
[recipients.domains."example.com"]
file = "recipients.txt"
[backend]
address = "127.0.0.1:2536"
[queue]
path = "queue"
[store]
path = "db"
[rules]
path = "$REPO/bench/rules"
[log]
level = "info"
CONF
echo "@example.com" > "$WORK/recipients.txt"

start_mailmoat() {
  "$BIN" --config "$WORK/mailmoat.toml" serve >> "$WORK/mailmoat.log" 2>&1 &
  MM_PID=$!
  for _ in $(seq 1 100); do ss -Hltn "sport = :2535" | grep -q . && return; sleep 0.05; done
  echo "mailmoat did not start:" >&2; tail "$WORK/mailmoat.log" >&2; exit 1
}

# The baseline: the same configuration in its own folder, 2545 -> 2546.
start_baseline() {
  mkdir -p "$WORK/baseline"
  sed -e 's/127.0.0.1:2535/127.0.0.1:2545/' -e 's/127.0.0.1:2536/127.0.0.1:2546/' \
    "$WORK/mailmoat.toml" > "$WORK/baseline/mailmoat.toml"
  cp "$WORK/recipients.txt" "$WORK/baseline/"
  "$BASELINE" --config "$WORK/baseline/mailmoat.toml" serve >> "$WORK/baseline/mailmoat.log" 2>&1 &
  BL_PID=$!
  for _ in $(seq 1 100); do ss -Hltn "sport = :2545" | grep -q . && return; sleep 0.05; done
  echo "baseline did not start:" >&2; tail "$WORK/baseline/mailmoat.log" >&2; exit 1
}

# An instance of the same configuration in its own folder on ports PORT ->
# PORT+1, with the client untrusted and names from the dnsmasq; AUTH says whether
# sender authentication is on. Prints its PID.
start_outside() { # name port auth [dns-server [metrics-port]]
  local name="$1" port="$2" auth="$3" dns="${4:-127.0.0.1:5353}" metrics="${5:-}" dir="$WORK/$1"
  mkdir -p "$dir"
  sed -e "s/127.0.0.1:2535/127.0.0.1:$port/" -e "s/127.0.0.1:2536/127.0.0.1:$((port + 1))/" \
    -e 's/^\[relay\]$/[relay]\ntrusted_networks = ["127.0.0.9\/32"]/' \
    "$WORK/mailmoat.toml" > "$dir/mailmoat.toml"
  cat >> "$dir/mailmoat.toml" <<EXTRA
[dns]
servers = ["$dns"]
[sender_auth]
spf = $auth
dkim = $auth
dmarc = $auth
arc = $auth
EXTRA
  [ -z "$metrics" ] || printf '[metrics]\nlisten = "127.0.0.1:%s"\n' "$metrics" >> "$dir/mailmoat.toml"
  cp "$WORK/recipients.txt" "$dir/"
  "$BIN" --config "$dir/mailmoat.toml" serve >> "$dir/mailmoat.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do ss -Hltn "sport = :$port" | grep -q . && { echo "$pid"; return; }; sleep 0.05; done
  echo "$name did not start:" >&2; tail "$dir/mailmoat.log" >&2; exit 1
}

if [ "$METRICS" = 1 ]; then
  mkdir -p "$WORK/metrics"
  sed -e "s/127.0.0.1:2535/127.0.0.1:2585/" -e "s/127.0.0.1:2536/127.0.0.1:2586/" \
    "$WORK/mailmoat.toml" > "$WORK/metrics/mailmoat.toml"
  printf '[metrics]\nlisten = "127.0.0.1:9187"\n' >> "$WORK/metrics/mailmoat.toml"
  cp "$WORK/recipients.txt" "$WORK/metrics/"
  "$BIN" --config "$WORK/metrics/mailmoat.toml" serve >> "$WORK/metrics/mailmoat.log" 2>&1 &
  MT_PID=$!
  for _ in $(seq 1 100); do ss -Hltn "sport = :2585" | grep -q . && break; sleep 0.05; done
  python3 -c '
import time, urllib.request
while True:
    try:
        urllib.request.urlopen("http://127.0.0.1:9187/metrics", timeout=2).read()
    except OSError:
        pass
    time.sleep(1)' &
  SCRAPER_PID=$!
fi

if [ "$INSTANCES" = 1 ]; then
  redis-server --port 6391 --bind 127.0.0.1 --save '' --appendonly no > "$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  HIGH=1000000000
  LIMITS="[mailbomb]
exempt_trusted = false
connections_per_minute = $HIGH
messages_per_hour = $HIGH
recipients_per_hour = $HIGH
messages_per_sender_per_hour = $HIGH
messages_per_recipient = $HIGH
identical_bodies = $HIGH"
  SHARED='[shared]
redis = "redis://127.0.0.1:6391"'
  # An instance in folder NAME listening on PORT, delivering to SINK, with EXTRA.
  instance_config() { # name port sink extra
    mkdir -p "$WORK/$1"
    sed -e "s/127.0.0.1:2535/127.0.0.1:$2/" -e "s/127.0.0.1:2536/127.0.0.1:$3/" \
      "$WORK/mailmoat.toml" > "$WORK/$1/mailmoat.toml"
    printf '%s\n' "$4" >> "$WORK/$1/mailmoat.toml"
    cp "$WORK/recipients.txt" "$WORK/$1/"
  }
  wait_port() { for _ in $(seq 1 100); do ss -Hltn "sport = :$1" | grep -q . && return; sleep 0.05; done; echo "nothing on $1" >&2; exit 1; }
  instance_config local 2595 2596 "$LIMITS"
  "$BIN" --config "$WORK/local/mailmoat.toml" serve >> "$WORK/local/mailmoat.log" 2>&1 &
  LOCAL_PID=$!
  instance_config redis 2605 2606 "$LIMITS
$SHARED
[metrics]
listen = \"127.0.0.1:9188\""
  "$BIN" --config "$WORK/redis/mailmoat.toml" serve >> "$WORK/redis/mailmoat.log" 2>&1 &
  SHARED_PID=$!
  PROXIED="$LIMITS
$SHARED"
  instance_config pair-a 2617 2616 "$PROXIED"
  instance_config pair-b 2618 2616 "$PROXIED"
  sed -i 's/^\[server\]$/[server]\nproxy_protocol = true\nproxy_networks = ["127.0.0.1\/32"]/' \
    "$WORK/pair-a/mailmoat.toml" "$WORK/pair-b/mailmoat.toml"
  # haproxy needs two descriptors a connection: stay within this shell's limit.
  HAPROXY_MAXCONN=$(( ($(ulimit -n) - 64) / 2 ))
  [ "$HAPROXY_MAXCONN" -le 1500 ] || HAPROXY_MAXCONN=1500
  cat > "$WORK/haproxy.cfg" <<HAP
global
  maxconn $HAPROXY_MAXCONN
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend smtp
  bind 127.0.0.1:2615
  default_backend mm
backend mm
  balance roundrobin
  server a 127.0.0.1:2617 send-proxy-v2
  server b 127.0.0.1:2618 send-proxy-v2
HAP
  # One parent for the pair and its balancer: the harness samples its descendants.
  bash -c "'$BIN' --config '$WORK/pair-a/mailmoat.toml' serve >> '$WORK/pair-a/mailmoat.log' 2>&1 &
           '$BIN' --config '$WORK/pair-b/mailmoat.toml' serve >> '$WORK/pair-b/mailmoat.log' 2>&1 &
           haproxy -db -f '$WORK/haproxy.cfg' >> '$WORK/haproxy.log' 2>&1 &
           wait" &
  PAIR_PID=$!
  for port in 2595 2605 2617 2618 2615; do wait_port "$port"; done
  shared_calls() {
    python3 -c '
import urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9188/metrics", timeout=5).read().decode()
print(next(l.split()[1] for l in text.splitlines() if l.startswith("mailmoat_shared_state_calls_total")))'
  }
fi

IFS=',' read -r -a SETTINGS <<< "$SETTINGS_ARG"
run_one() { # system target sink-port pid-args... sessions size
  local system="$1" target="$2" sink="$3" s="$4" l="$5"; shift 5
  "$HARNESS/smtp-throughput.sh" --target "$target" --sink-port "$sink" -s "$s" -m "$MSGS" -l "$l" \
    --label "$system" --csv "$CSV" "$@" | tail -1 | sed "s/^/$system c=$s ${l}B: /"
}

start_mailmoat
[ -n "$BASELINE" ] && start_baseline
if [ "$SENDER_AUTH" = 1 ]; then
  # The sender's domain authorises loopback and publishes p=reject, with the TTL
  # of --dns-ttl (dnsmasq's own default for local records is 0: "use once, keep
  # nowhere", which no published zone has and no resolver may cache).
  dnsmasq --no-daemon --no-resolv --no-hosts --port=5353 --listen-address=127.0.0.1 \
    --bind-interfaces --local=/org/ --local=/com/ --local-ttl="$DNS_TTL" \
    --txt-record=example.org,"v=spf1 ip4:127.0.0.0/8 -all" \
    --txt-record=_dmarc.example.org,"v=DMARC1; p=reject" \
    --host-record=example.org,127.0.0.1 --host-record=client.example.org,127.0.0.1 \
    > "$WORK/dnsmasq.log" 2>&1 &
  DNS_PID=$!
  UT_PID=$(start_outside untrusted 2555 false)
  SA_PID=$(start_outside auth 2565 true 127.0.0.1:5353 9195)
  if [ -n "$LOSSY" ]; then
    python3 "$REPO/bench/lossy-dns.py" --listen 127.0.0.1:5300 --upstream 127.0.0.1:5353 \
      --drop "$LOSSY" --delay-ms 1 --seconds 86400 > "$WORK/lossy-dns.log" 2>&1 &
    LOSSY_PID=$!
    SL_PID=$(start_outside auth-lossy 2625 true 127.0.0.1:5300 9196)
  fi
fi
# The DNS queries an instance sent so far (its metrics on PORT).
dns_queries() { # port
  python3 -c "
import re, urllib.request
text = urllib.request.urlopen('http://127.0.0.1:$1/metrics', timeout=5).read().decode()
m = re.search(r'^mailmoat_dns_resolver_total\{event=\"queries\"\} (\S+)', text, re.M)
print(int(float(m.group(1))) if m else 0)"
}
if [ "$SCANNERS" = 1 ]; then
  mkdir -p "$WORK/clamd/db" "$WORK/rspamd/conf/local.d" "$WORK/rspamd/db" "$WORK/rspamd/run"
  printf 'BenchSig:0:*:%s\n' "$(printf 'MAILMOAT-BENCH-VIRUS' | xxd -p | tr -d '\n')" > "$WORK/clamd/db/bench.ndb"
  printf 'Foreground yes\nTCPSocket 23310\nTCPAddr 127.0.0.1\nDatabaseDirectory %s\nUser root\n' \
    "$WORK/clamd/db" > "$WORK/clamd/clamd.conf"
  clamd -c "$WORK/clamd/clamd.conf" > "$WORK/clamd/clamd.log" 2>&1 &
  CLAMD_PID=$!
  L="$WORK/rspamd/conf/local.d"
  echo 'bind_socket = "127.0.0.1:21333";' > "$L/worker-normal.inc"
  echo 'bind_socket = "127.0.0.1:21334";' > "$L/worker-controller.inc"
  echo 'bind_socket = "127.0.0.1:21332";' > "$L/worker-proxy.inc"
  echo 'dns { nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }' > "$L/options.inc"
  setsid rspamd -f -u root -g root -c /etc/rspamd/rspamd.conf LOCAL_CONFDIR="$WORK/rspamd/conf" \
    DBDIR="$WORK/rspamd/db" RUNDIR="$WORK/rspamd/run" LOGDIR="$WORK/rspamd/run" > /dev/null 2>&1 &
  RSPAMD_PID=$!
  # Ready when clamd listens and rspamd's worker answers a check (10-30 s).
  python3 - <<'PY'
import http.client, socket, time
deadline = time.time() + 90
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", 23310), timeout=1).close()
        c = http.client.HTTPConnection("127.0.0.1", 21333, timeout=2)
        c.request("POST", "/checkv2", body=b"Subject: ready\r\n\r\nx\r\n")
        if c.getresponse().status == 200:
            break
    except OSError:
        pass
    time.sleep(0.5)
PY
  mkdir -p "$WORK/scanners"
  sed -e "s/127.0.0.1:2535/127.0.0.1:2575/" -e "s/127.0.0.1:2536/127.0.0.1:2576/" \
    "$WORK/mailmoat.toml" > "$WORK/scanners/mailmoat.toml"
  printf '[antivirus]\nclamd = "127.0.0.1:23310"\n[spam]\nrspamd = "http://127.0.0.1:21333"\n' \
    >> "$WORK/scanners/mailmoat.toml"
  cp "$WORK/recipients.txt" "$WORK/scanners/"
  "$BIN" --config "$WORK/scanners/mailmoat.toml" serve >> "$WORK/scanners/mailmoat.log" 2>&1 &
  SC_PID=$!
  for _ in $(seq 1 100); do ss -Hltn "sport = :2575" | grep -q . && break; sleep 0.05; done
fi
if [ "$POSTFIX" = 1 ]; then bash "$HARNESS/postfix-relay/setup.sh" start >/dev/null; fi
for rep in $(seq 1 "$REPS"); do
  for setting in "${SETTINGS[@]}"; do
    read -r s l <<< "$setting"
    run_one mailmoat 127.0.0.1:2535 2536 "$s" "$l" --server-pid "$MM_PID"
    if [ -n "$BASELINE" ]; then
      run_one baseline 127.0.0.1:2545 2546 "$s" "$l" --server-pid "$BL_PID"
    fi
    if [ "$SENDER_AUTH" = 1 ]; then
      run_one untrusted 127.0.0.1:2555 2556 "$s" "$l" --server-pid "$UT_PID"
      before=$(dns_queries 9195)
      run_one auth 127.0.0.1:2565 2566 "$s" "$l" --server-pid "$SA_PID"
      after=$(dns_queries 9195)
      python3 -c "print('auth c=$s ${l}B: %.3f DNS queries per message' % (($after - $before) / $MSGS))"
      if [ -n "$LOSSY" ]; then
        before=$(dns_queries 9196)
        python3 "$REPO/bench/mail_from_latency.py" --target 127.0.0.1:2625 \
          --sender "probe$rep$s@example.org" -n 200 > "$WORK/mail-from.txt" 2>&1 &
        PROBE_PID=$!
        run_one auth-lossy 127.0.0.1:2625 2626 "$s" "$l" --server-pid "$SL_PID"
        wait "$PROBE_PID" || true
        after=$(dns_queries 9196)
        python3 -c "print('auth-lossy c=$s ${l}B: %.3f DNS queries per message' % (($after - $before) / $MSGS))"
        sed "s/^/auth-lossy c=$s ${l}B: /" "$WORK/mail-from.txt"
      fi
    fi
    if [ "$SCANNERS" = 1 ]; then
      run_one scanners 127.0.0.1:2575 2576 "$s" "$l" --server-pid "$SC_PID"
    fi
    if [ "$METRICS" = 1 ]; then
      run_one metrics 127.0.0.1:2585 2586 "$s" "$l" --server-pid "$MT_PID"
    fi
    if [ "$INSTANCES" = 1 ]; then
      run_one local 127.0.0.1:2595 2596 "$s" "$l" --server-pid "$LOCAL_PID"
      before=$(shared_calls)
      run_one redis 127.0.0.1:2605 2606 "$s" "$l" --server-pid "$SHARED_PID"
      after=$(shared_calls)
      python3 -c "print('redis c=$s ${l}B: %.2f Redis round trips per message' % (($after - $before) / $MSGS))"
      run_one pair 127.0.0.1:2615 2616 "$s" "$l" --server-pid "$PAIR_PID"
    fi
    if [ "$POSTFIX" = 1 ]; then
      sleep 3  # Postfix drops its cached client connections after 2 s idle
      run_one postfix 127.0.0.1:2525 2526 "$s" "$l" --server-pidfile /var/spool/postfix-bench/pid/master.pid
    fi
  done
done

COMPARE=()
[ "$INSTANCES" = 1 ] && COMPARE=(--compare redis/local --compare pair/redis)
if [ "$ONLY_THROUGHPUT" = 1 ]; then
  python3 "$REPO/bench/report.py" "$CSV" "${COMPARE[@]}"
  echo "machine: $(nproc) cores, $(uname -r); $(date -u +%F)"
  exit 0
fi

# p99 end-of-data -> 250 at c=50, against mailmoat (a sink must take its mail).
smtp-sink -c -u nobody -m 1024 127.0.0.1:2536 1024 > /dev/null 2>&1 &
SINK=$!
sleep 0.3
"$REPO/target/release/examples/eod_latency" 127.0.0.1:2535 50 5000 5120 > "$WORK/latency.txt"
sleep 2
AFTER_KB=$(awk '/VmRSS/ {print $2}' "/proc/$MM_PID/status")
LEFT=$(find "$WORK/queue/active" "$WORK/queue/deferred" "$WORK/queue/hold" -name '*.env' | wc -l)
SPOOL_KB=$(du -sk "$WORK/queue" | cut -f1)
STORE_KB=$(du -sk "$WORK/db" | cut -f1)
# Idle connections on a freshly started server: what holding them costs.
kill "$MM_PID"; wait "$MM_PID" 2>/dev/null || true
start_mailmoat
python3 "$REPO/bench/idle_connections.py" 127.0.0.1:2535 --connections 1000 --pid "$MM_PID" > "$WORK/idle.txt"
kill "$SINK"; wait "$SINK" 2>/dev/null || true

python3 "$REPO/bench/report.py" "$CSV" "${COMPARE[@]}"
echo
cat "$WORK/latency.txt" "$WORK/idle.txt"
echo "after all runs: mailmoat resident ${AFTER_KB} KiB; ${LEFT} message(s) left in the queue; spool ${SPOOL_KB} KiB on disk (spare files included); store ${STORE_KB} KiB"
echo "machine: $(nproc) cores, $(uname -r); $(date -u +%F)"
