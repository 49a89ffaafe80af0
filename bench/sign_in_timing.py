#!/usr/bin/env python3
"""Does the time of a refused sign-in tell whether the name has an account?
Signs in on the quarantine's page with a wrong password, alternately as an
existing name and as names that have none, from several loopback source
addresses (each stays under the ten failures a minute that the page allows),
and prints the median answer time of each kind and whether the two answers
are the same page.

  sign_in_timing.py --target 127.0.0.1:8025 --user root
(the server's [auth] failure_delay is added to both; set it to "0s" to see
the rest)
"""
import argparse, http.client, re, statistics, time
from urllib.parse import urlencode

ap = argparse.ArgumentParser()
ap.add_argument("--target", required=True)
ap.add_argument("--user", required=True, help="a name that has an account")
ap.add_argument("--addresses", type=int, default=10, help="source addresses 127.0.0.2...")
a = ap.parse_args()
host, port = a.target.rsplit(":", 1)


def sign_in(source, user):
    c = http.client.HTTPConnection(host, int(port), source_address=(source, 0))
    c.request("GET", "/")
    token = re.search(r'name="csrf" value="([^"]+)"', c.getresponse().read().decode()).group(1)
    c.close()
    c = http.client.HTTPConnection(host, int(port), source_address=(source, 0))
    form = urlencode({"csrf": token, "user": user, "password": "not the password"})
    start = time.perf_counter()
    c.request("POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
    answer = c.getresponse()
    body = answer.read()
    took = time.perf_counter() - start
    c.close()
    return answer.status, took, re.sub(rb'name="csrf" value="[^"]+"', b"", body)


times = {"an existing name": [], "no such name": []}
pages = {}
for i in range(a.addresses):
    source = f"127.0.0.{i + 2}"
    for k in range(5):
        for kind, user in (("an existing name", a.user), ("no such name", f"nobody{i}x{k}")):
            status, took, page = sign_in(source, user)
            if status != 401:
                raise SystemExit(f"{user} from {source}: {status}, not 401")
            times[kind].append(took * 1000)
            pages[kind] = page
for kind, t in times.items():
    t.sort()
    print(f"{kind:17} n={len(t)} median {statistics.median(t):.1f} ms "
          f"(p10 {t[len(t) // 10]:.1f}, p90 {t[len(t) * 9 // 10]:.1f})")
print("the same page for both:", len(set(pages.values())) == 1)
