#!/usr/bin/python3
"""Unpacks a message the way a recipient's tools would and prints, as JSON, every
program, blocked script or macro project any of them can get out of it.

usage: extract_all.py MESSAGE BLOCKED_EXTENSIONS_COMMA_SEPARATED

Each MIME leaf (Python's email package, default policy) is written to a file;
every file is then handed to every extractor that takes it — 7-Zip (p7zip-full),
libarchive's bsdtar, Python's zipfile, cabextract, tnef, isoinfo, mtools, the
gzip, bzip2, xz, zstd and lzip decompressors, Python's email for attached
messages and a reader of Word's embedded objects (Ole10Native) — and whatever comes out is unpacked again, a few levels deep. A finding is a file
whose bytes are a Windows, Linux or macOS program, a file whose name has a
blocked extension, or a VBA project (an Office document's macros). Extractors
that fail on a file find nothing there; no finding is ever made up.
"""
import email
import email.policy
import json
import os
import subprocess
import sys
import tempfile
import zipfile

path, blocked = sys.argv[1], set(sys.argv[2].split(","))
raw = open(path, "rb").read()
findings = []
MAX_FILES = 400
MAX_DEPTH = 7


def is_program(data):
    if data.startswith(b"MZ"):
        return True
    if data.startswith(b"\x7fELF"):
        return True
    if data[:4] in (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe"):
        return True
    return False


def judge(name, data, chain):
    base = os.path.basename(name.replace("\\", "/")).rstrip(". ")
    ext = base.rsplit(".", 1)[-1].lower() if "." in base else ""
    where = " > ".join(chain + [base])
    if is_program(data):
        findings.append(f"program: {where}")
    elif ext in blocked:
        findings.append(f"blocked type .{ext}: {where}")
    elif base.lower() in ("vbaproject.bin", "_vba_project"):
        findings.append(f"macros: {where}")


def run(command, cwd):
    try:
        subprocess.run(command, cwd=cwd, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    except Exception:
        pass


def isoinfo_extract(file, out):
    for flag in (["-J"], ["-R"], []):
        try:
            listing = subprocess.run(["isoinfo", "-i", file, "-f"] + flag, capture_output=True, timeout=60).stdout
        except Exception:
            continue
        for entry in listing.decode("utf-8", "replace").splitlines():
            target = os.path.join(out, "iso" + "".join(flag), entry.lstrip("/").replace("/", "_"))
            try:
                data = subprocess.run(["isoinfo", "-i", file, "-x", entry] + flag, capture_output=True, timeout=60).stdout
            except Exception:
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)


def python_zip(file, out):
    try:
        with zipfile.ZipFile(file) as z:
            z.extractall(os.path.join(out, "pyzip"))
    except Exception:
        pass


def decompress(tool):
    def extract(file, out):
        try:
            data = subprocess.run([tool, "-d", "-c", file], capture_output=True, timeout=60).stdout
        except Exception:
            return
        if data:
            os.makedirs(os.path.join(out, tool), exist_ok=True)
            with open(os.path.join(out, tool, "decompressed"), "wb") as f:
                f.write(data)
    return extract


def as_message(file, out):
    """Mail programs open an attached message (.eml) as a message."""
    data = open(file, "rb").read(65536)
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].lower()
    if not (b"from:" in head or b"subject:" in head or b"content-type:" in head):
        return
    message = email.message_from_bytes(open(file, "rb").read(), policy=email.policy.default)
    for n, part in enumerate(message.walk()):
        if part.is_multipart():
            continue
        try:
            payload = part.get_payload(decode=True) or b""
        except Exception:
            continue
        name = part.get_filename() or f"part{n}"
        target = os.path.join(out, "message", str(n))
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, os.path.basename(name) or f"part{n}"), "wb") as f:
            f.write(payload)


def packager(file, out):
    """Word's embedded objects: what a double click on one writes out (the layout
    oletools reads from an Ole10Native stream)."""
    if not file.endswith("Ole10Native") and "Ole10Native" not in os.path.basename(file):
        return
    data = open(file, "rb").read()
    try:
        pos = 6
        label_end = data.index(b"\0", pos)
        label = data[pos:label_end].decode("latin-1")
        pos = data.index(b"\0", label_end + 1) + 1 + 8
        pos = data.index(b"\0", pos) + 1
        size = int.from_bytes(data[pos:pos + 4], "little")
        payload = data[pos + 4:pos + 4 + size]
    except ValueError:
        return
    os.makedirs(os.path.join(out, "packager"), exist_ok=True)
    with open(os.path.join(out, "packager", os.path.basename(label.replace("\\", "/")) or "object"), "wb") as f:
        f.write(payload)


EXTRACTORS = {
    "7z": lambda f, o: run(["7z", "x", "-y", "-pwrong", "-o" + os.path.join(o, "7z"), f], o),
    "bsdtar": lambda f, o: (os.makedirs(os.path.join(o, "bsdtar"), exist_ok=True),
                            run(["bsdtar", "-x", "-f", f, "-C", os.path.join(o, "bsdtar")], o)),
    "zipfile": python_zip,
    "cabextract": lambda f, o: run(["cabextract", "-q", "-d", os.path.join(o, "cab"), f], o),
    "tnef": lambda f, o: (os.makedirs(os.path.join(o, "tnef"), exist_ok=True),
                          run(["tnef", "--overwrite", "-C", os.path.join(o, "tnef"), "-f", f], o)),
    "isoinfo": isoinfo_extract,
    "mtools": lambda f, o: (os.makedirs(os.path.join(o, "mtools"), exist_ok=True),
                            run(["mcopy", "-s", "-n", "-i", f, "::*", os.path.join(o, "mtools")], o)),
    "gzip": decompress("gzip"),
    "bzip2": decompress("bzip2"),
    "xz": decompress("xz"),
    "zstd": decompress("zstd"),
    "lzip": decompress("lzip"),
    "mail": as_message,
    "packager": packager,
}

seen = set()
count = 0


def unpack(file, name, chain, depth, work):
    global count
    data = open(file, "rb").read()
    judge(name, data, chain)
    key = (hash(data), depth)
    if depth >= MAX_DEPTH or count > MAX_FILES or key in seen or len(data) == 0:
        return
    seen.add(key)
    for extractor, extract in EXTRACTORS.items():
        out = tempfile.mkdtemp(dir=work)
        extract(file, out)
        for root, _, files in os.walk(out):
            for child in files:
                count += 1
                if count > MAX_FILES:
                    return
                unpack(os.path.join(root, child), child, chain + [f"{name} ({extractor})"], depth + 1, work)


with tempfile.TemporaryDirectory() as work:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    for n, part in enumerate(message.walk()):
        if part.is_multipart():
            continue
        try:
            data = part.get_payload(decode=True) or b""
        except Exception:
            data = b""
        name = part.get_filename() or f"part{n}"
        file = os.path.join(work, f"leaf{n}")
        with open(file, "wb") as f:
            f.write(data)
        unpack(file, name, [], 0, work)
print(json.dumps(sorted(set(findings))))
