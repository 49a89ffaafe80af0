#!/usr/bin/env python3
"""How long the quarantine's list takes on a large archive (fill one with
`cargo run --release --example archive_fill -- CONFIG 300000`): signs in as a
recipient and as an administrator and times five GETs of each page, in ms.

  quarantine_pages.py --target 127.0.0.1:8025 --recipient alice@example.test:PW --admin root:PW
"""
import argparse, http.client, re, time
from urllib.parse import urlencode

ap = argparse.ArgumentParser()
ap.add_argument("--target", required=True)
ap.add_argument("--recipient", required=True, help="NAME:PASSWORD of a users-file address")
ap.add_argument("--admin", required=True, help="NAME:PASSWORD of an administrator")
a = ap.parse_args()
host, port = a.target.rsplit(":", 1)


def sign_in(credentials):
    user, password = credentials.split(":", 1)
    c = http.client.HTTPConnection(host, int(port))
    c.request("GET", "/")
    token = re.search(r'name="csrf" value="([^"]+)"', c.getresponse().read().decode()).group(1)
    c.close()
    c = http.client.HTTPConnection(host, int(port))
    form = urlencode({"csrf": token, "user": user, "password": password})
    c.request("POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
    answer = c.getresponse()
    answer.read()
    return user, answer.getheader("Set-Cookie").split(";")[0]


for (user, cookie), path, what in (
    (sign_in(a.recipient), "/", "a recipient's list"),
    (sign_in(a.admin), "/", "the administrator's latest 500"),
    (sign_in(a.admin), "/?sender=nobody", "a search that reads every record"),
):
    took = []
    for _ in range(5):
        c = http.client.HTTPConnection(host, int(port))
        start = time.perf_counter()
        c.request("GET", path, headers={"Cookie": cookie})
        answer = c.getresponse()
        body = answer.read()
        took.append((time.perf_counter() - start) * 1000)
        c.close()
    rows = body.count(b'<a href="/item/')
    print(f"{what:34} ({user}, {rows} rows): " + " ".join(f"{t:.0f}" for t in took) + " ms")
