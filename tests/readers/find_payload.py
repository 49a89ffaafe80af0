#!/usr/bin/env python3
"""Reads a message the ways different mail programs read it and prints, as JSON,
the readers that find a payload marker in what they decode.

usage: find_payload.py MESSAGE MARKER

Readers: Python's email package with the compat32 and the default policy; a
"first header wins" and a "last header wins" splitter (a multipart cut at the
boundary of the first or the last Content-Type header, parts decoded by their
first or last Content-Transfer-Encoding); ripmime and munpack (Debian packages);
and a raw scan that decodes every base64 run (at every alignment), every
quoted-printable text and every uuencoded or begin-base64 block it finds.
"""
import binascii
import email
import email.policy
import json
import os
import re
import subprocess
import sys
import tempfile

path, marker = os.path.abspath(sys.argv[1]), sys.argv[2].encode()
raw = open(path, "rb").read()
found = []


def python_reader(policy):
    message = email.message_from_bytes(raw, policy=policy)
    for part in message.walk():
        if part.is_multipart():
            continue
        try:
            payload = part.get_payload(decode=True) or b""
        except Exception:
            payload = b""
        if marker in payload:
            return True
        if isinstance(part.get_payload(), str) and marker in part.get_payload().encode("utf-8", "replace"):
            return True
    return False


def b64_lenient(text):
    chars = re.sub(rb"[^A-Za-z0-9+/]", b"", text)
    chars = chars[: len(chars) - len(chars) % 4]
    try:
        return binascii.a2b_base64(chars + b"==")
    except Exception:
        return b""


def splitter(last):
    """Cuts parts at a boundary taken from the first (or last) Content-Type header
    of each entity, decodes by the first (or last) Content-Transfer-Encoding."""
    def headers_of(entity):
        head, _, body = entity.partition(b"\r\n\r\n")
        fields = re.findall(rb"(?im)^([A-Za-z-]+):[ \t]*((?:.*)(?:\r\n[ \t].*)*)", head)
        return fields, body

    def pick(fields, name):
        values = [v for n, v in fields if n.lower() == name]
        if not values:
            return None
        return values[-1] if last else values[0]

    def walk(entity, depth=0):
        if depth > 20:
            return False
        fields, body = headers_of(entity)
        ctype = pick(fields, b"content-type") or b"text/plain"
        cte = (pick(fields, b"content-transfer-encoding") or b"").strip().lower()
        match = re.search(rb'(?i)boundary\s*=\s*"?([^";\r\n]+)"?', ctype)
        if ctype.lower().strip().startswith(b"multipart") and match:
            boundary = match.group(1).strip()
            pieces = body.split(b"--" + boundary)
            return any(walk(p.lstrip(b"\r\n").rstrip(b"-"), depth + 1) for p in pieces[1:])
        if ctype.lower().strip().startswith(b"message/rfc822"):
            return walk(body, depth + 1)
        if cte == b"base64":
            data = b64_lenient(body)
        elif cte == b"quoted-printable":
            data = binascii.a2b_qp(body)
        else:
            data = body
        return marker in data

    return walk(raw)


def tool(command, outdir_flag):
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(command(out), capture_output=True, timeout=60)
        for root, _, files in os.walk(out):
            for name in files:
                if marker in open(os.path.join(root, name), "rb").read():
                    return True
    return False


def raw_scan():
    if marker in raw:
        return True
    for run in re.findall(rb"[A-Za-z0-9+/=\r\n]{16,}", raw):
        flat = re.sub(rb"[\r\n=]", b"", run)
        for skip in range(4):
            if marker in b64_lenient(flat[skip:]):
                return True
    if marker in binascii.a2b_qp(raw):
        return True
    for block in re.findall(rb"(?ms)^begin [0-7]{3,4} [^\r\n]*\r?\n(.*?)^end\r?$", raw):
        data = b""
        for line in block.splitlines():
            try:
                data += binascii.a2b_uu(line)
            except Exception:
                pass
        if marker in data:
            return True
    for block in re.findall(rb"(?ms)^begin-base64 [0-7]{3,4} [^\r\n]*\r?\n(.*?)^====", raw):
        if marker in b64_lenient(block):
            return True
    return False


readers = {
    "python-compat32": lambda: python_reader(email.policy.compat32),
    "python-default": lambda: python_reader(email.policy.default),
    "first-header-wins": lambda: splitter(last=False),
    "last-header-wins": lambda: splitter(last=True),
    "ripmime": lambda: tool(lambda out: ["ripmime", "-i", path, "-d", out], "-d"),
    "munpack": lambda: tool(lambda out: ["munpack", "-q", "-t", "-C", out, path], "-C"),
    "raw-scan": raw_scan,
}
for name, read in readers.items():
    try:
        if read():
            found.append(name)
    except Exception as e:  # a reader that breaks finds nothing, but say so
        print(f"{name}: {e}", file=sys.stderr)
print(json.dumps(found))
