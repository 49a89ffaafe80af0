#!/usr/bin/env python3
"""kill -9 soak: mail under load, the proxy killed and restarted N times, then a
count of what the clients were told was accepted against what the backend got.

    python3 bench/kill_soak.py [--rounds N] [--senders N] [--binary PATH]

Starts a recording SMTP sink (in this script) on 127.0.0.1:2556 and the mailmoat
release binary on 127.0.0.1:2555 (spool and store in a temporary folder), sends
numbered messages from several threads, kills the proxy with SIGKILL at random
moments and restarts it, then waits until every acknowledged message has arrived
(or a time limit) and prints: acknowledged, lost (must be 0), duplicated (at-least-
once allows some; each should be a message in flight at a kill), corrupt (files in
corrupt/, must be 0). Not part of CI: it takes minutes and kills processes.
"""
import argparse
import os
import random
import re
import signal
import socket
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("--rounds", type=int, default=10)
parser.add_argument("--senders", type=int, default=8)
parser.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "mailmoat"))
args = parser.parse_args()

PROXY = ("127.0.0.1", 2555)
SINK = ("127.0.0.1", 2556)
received = {}
received_lock = threading.Lock()


def sink_session(conn):
    try:
        serve_sink(conn)
    except OSError:
        pass  # a proxy killed mid-delivery


def serve_sink(conn):
    f = conn.makefile("rb")
    conn.sendall(b"220 sink ESMTP\r\n")
    while True:
        line = f.readline()
        if not line:
            return
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            conn.sendall(b"250-sink\r\n250 8BITMIME\r\n")
        elif verb == b"DATA":
            conn.sendall(b"354 go\r\n")
            data = []
            while True:
                l = f.readline()
                if not l or l == b".\r\n":
                    break
                data.append(l)
            text = b"".join(data)
            m = re.search(rb"X-Seq: (\d+)", text)
            if m:
                with received_lock:
                    seq = int(m.group(1))
                    received[seq] = received.get(seq, 0) + 1
            conn.sendall(b"250 2.0.0 stored\r\n")
        elif verb == b"QUIT":
            conn.sendall(b"221 bye\r\n")
            return
        else:
            conn.sendall(b"250 2.0.0 ok\r\n")


def sink():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(SINK)
    server.listen(512)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=sink_session, args=(conn,), daemon=True).start()


work = tempfile.mkdtemp(prefix="mailmoat-soak.")
config = os.path.join(work, "mailmoat.toml")
open(os.path.join(work, "recipients.txt"), "w").write("@example.com\n")
open(config, "w").write(f"""
[server]
listen = ["{PROXY[0]}:{PROXY[1]}"]
hostname = "mx.soak.test"
max_connections_per_ip = 1000
[relay]
hosted_domains = ["example.com"]
trusted_networks = []
[recipients.domains."example.com"]
file = "recipients.txt"
[backend]
address = "{SINK[0]}:{SINK[1]}"
[checks]
sender_domain_exists = false
[dns]
servers = ["127.0.0.1:9"]
# Durability under kills is measured, not DNS: with no name server here, sender
# authentication would make each message wait out the DNS timeout.
[sender_auth]
spf = false
dkim = false
dmarc = false
arc = false
[queue]
path = "queue"
min_backoff = "1s"
max_backoff = "2s"
[store]
path = "db"
[log]
level = "warn"
""")

acked = set()
acked_lock = threading.Lock()
sequence = iter(range(1, 10**9))
sequence_lock = threading.Lock()
running = threading.Event()
errors = []


def sender():
    while True:
        running.wait()
        with sequence_lock:
            seq = next(sequence)
        body = f"From: <s@remote.test>\r\nTo: <u@example.com>\r\nSubject: soak {seq}\r\nX-Seq: {seq}\r\n\r\n" + ("x" * 76 + "\r\n") * 26
        try:
            with smtplib.SMTP(*PROXY, timeout=10, local_hostname="client.soak.test") as s:
                s.sendmail("s@remote.test", ["u@example.com"], body)
            with acked_lock:
                acked.add(seq)
        except Exception as e:
            errors.append(repr(e))
            time.sleep(0.05)


def start_proxy():
    log = open(os.path.join(work, "mailmoat.log"), "a")
    proc = subprocess.Popen([args.binary, "--config", config, "serve"], stdout=log, stderr=log)
    for _ in range(200):
        try:
            socket.create_connection(PROXY, timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    sys.exit("mailmoat did not start; see " + os.path.join(work, "mailmoat.log"))


threading.Thread(target=sink, daemon=True).start()
for _ in range(args.senders):
    threading.Thread(target=sender, daemon=True).start()
proxy = start_proxy()
running.set()
for round_ in range(args.rounds):
    time.sleep(random.uniform(1.5, 4.0))
    proxy.send_signal(signal.SIGKILL)
    proxy.wait()
    proxy = start_proxy()
running.clear()
time.sleep(1)
deadline = time.time() + 120
while time.time() < deadline:
    with acked_lock, received_lock:
        missing = [s for s in acked if s not in received]
    if not missing:
        break
    time.sleep(0.5)
proxy.terminate()
proxy.wait()
corrupt = len([n for n in os.listdir(os.path.join(work, "queue", "corrupt"))])
with acked_lock, received_lock:
    lost = [s for s in acked if s not in received]
    duplicated = sum(1 for s, n in received.items() if n > 1)
    extra = sum(n - 1 for n in received.values() if n > 1)
print(f"rounds {args.rounds}, senders {args.senders}: acknowledged {len(acked)}, "
      f"received {len(received)} distinct, lost {len(lost)}, duplicated {duplicated} "
      f"({extra} extra copies), corrupt files {corrupt}")
print(f"work folder: {work}")
if errors:
    print(f"{len(errors)} sends failed (a kill cuts them); the first: {errors[0]}")
sys.exit(1 if lost or corrupt else 0)
