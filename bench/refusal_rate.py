#!/usr/bin/env python3
"""How fast refusals at RCPT go, each archived as a record: THREADS clients,
each LOOPS sessions of 18 RCPTs to addresses that do not exist (under the
shipped error_limit of 20). Prints the refusals per second and the replies.

  refusal_rate.py --target 127.0.0.1:2525 --domain example.test --threads 10 --loops 100
"""
import argparse, socket, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--target", required=True)
ap.add_argument("--domain", required=True, help="a hosted domain")
ap.add_argument("--threads", type=int, default=10)
ap.add_argument("--loops", type=int, default=100)
a = ap.parse_args()
host, port = a.target.rsplit(":", 1)
PER_SESSION = 18
replies = {}
lock = threading.Lock()


def client(k):
    for j in range(a.loops):
        with socket.create_connection((host, int(port))) as s:
            f = s.makefile("rb")

            def reply():
                while True:
                    line = f.readline()
                    if line[3:4] != b"-":
                        return line

            reply()
            s.sendall(b"EHLO client.example\r\n")
            reply()
            s.sendall(b"MAIL FROM:<sender@remote.example>\r\n")
            reply()
            for i in range(PER_SESSION):
                s.sendall(b"RCPT TO:<nobody-%d-%d-%d@%s>\r\n" % (k, j, i, a.domain.encode()))
                code = reply()[:3].decode()
                with lock:
                    replies[code] = replies.get(code, 0) + 1
            s.sendall(b"QUIT\r\n")


start = time.perf_counter()
threads = [threading.Thread(target=client, args=(k,)) for k in range(a.threads)]
for t in threads:
    t.start()
for t in threads:
    t.join()
took = time.perf_counter() - start
total = a.threads * a.loops * PER_SESSION
print(f"{total} refusals in {took:.2f} s: {total / took:.0f}/s; replies {replies}")
