#!/usr/bin/env python3
"""Medians per system and setting from smtp-throughput.sh CSV rows, and mailmoat's
ratio to every other system (Postfix, a baseline build): the median of the ratios
of runs made back to back (run i of mailmoat with run i of the other at the same
setting), so a slow spell of the shared machine counts against both alike.

usage: report.py results.csv [--compare A/B ...]

--compare A/B also prints the ratio of system A to system B (same pairing).
"""
import csv
import statistics
import sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1])))
compare = [sys.argv[i + 1].split("/") for i, arg in enumerate(sys.argv) if arg == "--compare"]
groups = defaultdict(list)
for r in rows:
    groups[(r["label"], int(r["sessions"]), int(r["size"]))].append(r)


def med(rs, key):
    vals = [float(r[key]) for r in rs if r.get(key)]
    return statistics.median(vals) if vals else None


def cpu_ms(rs):
    vals = [float(r["server_cpu_s"]) * 1000 / int(r["delivered"]) for r in rs if r.get("server_cpu_s") and int(r["delivered"])]
    return statistics.median(vals) if vals else None


settings = sorted({(s, l) for (_, s, l) in groups}, key=lambda x: (x[1], x[0]))
systems = sorted({name for (name, _, _) in groups}, key=lambda n: n != "mailmoat")
others = [name for name in systems if name != "mailmoat"]
print("| setting | " + " | ".join(f"{s} e2e msg/s | {s} CPU ms/msg | {s} peak RSS MiB" for s in systems)
      + "".join(f" | e2e ratio to {o}" for o in others) + " |")
print("|---" * (1 + 3 * len(systems) + len(others)) + "|")
for s, l in settings:
    cells = [f"c={s} {l // 1024} KB"]
    e2e = {}
    for name in systems:
        rs = groups.get((name, s, l), [])
        e2e[name] = med(rs, "e2e_rate")
        loss = sum(int(r["accepted"]) - int(r["delivered"]) for r in rs)
        rss = max((float(r["server_peak_rss_kb"]) for r in rs if r.get("server_peak_rss_kb")), default=0)
        c = cpu_ms(rs)
        cells += [
            f"{e2e[name]:.0f}" + ("" if loss == 0 else f" (LOSS {loss})") if e2e[name] else "-",
            f"{c:.2f}" if c else "-",
            f"{rss / 1024:.0f}" if rss else "-",
        ]
    for other in others:
        pairs = list(zip(groups.get(("mailmoat", s, l), []), groups.get((other, s, l), [])))
        ratios = [float(m["e2e_rate"]) / float(p["e2e_rate"]) for m, p in pairs if float(p["e2e_rate"])]
        cells.append(f"{statistics.median(ratios):.3f}x ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else "-")
    print("| " + " | ".join(cells) + " |")
print(f"\n{len(rows)} runs; medians (ratio: median of back-to-back pairs, range in brackets);")
print("every run checked for loss and duplicates by the harness.")
for a, b in compare:
    for s, l in settings:
        pairs = list(zip(groups.get((a, s, l), []), groups.get((b, s, l), [])))
        ratios = [float(x["e2e_rate"]) / float(y["e2e_rate"]) for x, y in pairs if float(y["e2e_rate"])]
        if ratios:
            print(f"{a} / {b} at c={s} {l // 1024} KB: {statistics.median(ratios):.3f}x "
                  f"({min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} pairs)")
