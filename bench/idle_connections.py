#!/usr/bin/env python3
"""Resident memory of a server holding N idle SMTP connections.

usage: idle_connections.py HOST:PORT --connections N --pid PID

Opens N connections, reads each greeting, says EHLO, then reads the server's VmRSS
before and after. Loopback targets only.
"""
import argparse
import socket
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--pid", type=int, required=True)
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    assert host.startswith("127.") or host in ("::1", "localhost"), "loopback only"
    before = rss_kb(args.pid)
    conns = []
    for _ in range(args.connections):
        s = socket.create_connection((host, int(port)))
        s.recv(512)
        s.sendall(b"EHLO idle.test\r\n")
        conns.append(s)
    for s in conns:
        s.recv(4096)
    time.sleep(1)
    held = rss_kb(args.pid)
    print(
        f"{len(conns)} idle connections: resident memory {held / 1024:.1f} MiB "
        f"(before: {before / 1024:.1f} MiB)"
    )
    for s in conns:
        s.close()


main()
