#!/usr/bin/env python3
"""How long MAIL FROM waits for its answer, from outside: N sessions one after
another (beside whatever load runs), each EHLO then MAIL FROM, timed from the
command to the reply. Prints the median, p99 and the longest wait, and the
replies that were not 250.

  mail_from_latency.py --target 127.0.0.1:2565 --sender news@example.org -n 200
"""
import argparse, socket, time

ap = argparse.ArgumentParser()
ap.add_argument("--target", required=True)
ap.add_argument("--sender", required=True)
ap.add_argument("-n", type=int, default=200)
a = ap.parse_args()
host, port = a.target.rsplit(":", 1)

def reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("closed")
        lines.append(line)
        if line[3:4] != b"-":
            return b"".join(lines)

waits, other = [], {}
for _ in range(a.n):
    with socket.create_connection((host, int(port)), timeout=60) as s:
        f = s.makefile("rb")
        reply(f)
        s.sendall(b"EHLO client.example.org\r\n"); reply(f)
        start = time.monotonic()
        s.sendall(b"MAIL FROM:<%s>\r\n" % a.sender.encode())
        answer = reply(f)
        waits.append(time.monotonic() - start)
        if not answer.startswith(b"250"):
            code = answer[:9].decode(errors="replace")
            other[code] = other.get(code, 0) + 1
        s.sendall(b"QUIT\r\n")
waits.sort()
pick = lambda q: waits[min(len(waits) - 1, int(q * len(waits)))]
print("MAIL FROM wait: median %.1f ms, p99 %.1f ms, longest %.1f ms over %d sessions; not 250: %s"
      % (pick(0.5) * 1000, pick(0.99) * 1000, waits[-1] * 1000, len(waits), other or "none"))
