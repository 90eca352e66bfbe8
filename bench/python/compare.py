"""Sends the same requests to the Python baseline and to Nimbus and checks
that they answer alike: same status, content type and error code; on
success the same JSON structure (keys, key order, integers) with floats
within --tolerance. Standard library only.

Vision is the exception where the pixels themselves differ: Pillow's JPEG
decoder (libjpeg-turbo) and bilinear resampler (8-bit intermediate) are not
the image crate's (zune-jpeg; f32 intermediate), and the example model has
random weights, so its ~0.01 probabilities move by up to ~4e-4 and neighbours can
swap places. Those cases ("pixels") pass when both name the same five
classes with probabilities within --pixel-tolerance. Cases marked "known"
are documented differences: printed, never failed.

    python bench/python/compare.py --function digits \\
        --python http://127.0.0.1:18101/invocations \\
        --nimbus http://127.0.0.1:18080/v1/functions/digits/invocations

Exits 1 if any request answered differently.
"""

from __future__ import annotations

import argparse
import http.client
import json
import struct
import sys
import urllib.parse
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def post(url: str, body: bytes, content_type: str | None, accept: str | None):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    headers = {"Content-Length": str(len(body))}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if accept is not None:
        headers["Accept"] = accept
    conn.request("POST", u.path, body=body, headers=headers)
    r = conn.getresponse()
    out = (r.status, r.getheader("content-type", ""), r.read())
    conn.close()
    return out


def png(width: int, height: int) -> bytes:
    """An RGB gradient as a PNG, without any imaging library."""
    raw = b"".join(
        b"\0" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, (x + y) % 256))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def cases(function: str) -> list[tuple]:
    """(name, body, content type, accept[, kind]); None leaves the header
    out; kind is "pixels" or "known" (see the module docs)."""
    if function == "digits":
        sample = (ROOT / "examples/digits/sample.csv").read_bytes()
        row = sample.splitlines()[0]
        return [
            ("sample", sample, "text/csv", None),
            ("sample, accept */*", sample, "text/csv", "*/*"),
            ("sample, accept json", sample, "text/csv", "application/json"),
            ("sample, accept jsonlines", sample, "text/csv", "application/jsonlines"),
            ("accept list", sample, "text/csv", "text/html, application/jsonlines;q=0.9, application/json"),
            ("accept application/*", sample, "text/csv", "application/*"),
            ("no content type", sample, None, None),
            ("content type with params", sample, "Text/CSV; charset=utf-8", None),
            ("blank lines and CRLF", b"\r\n" + row + b"\r\n\r\n" + row + b"\r\n", "text/csv", None),
            ("spaces around cells", row.replace(b",", b" , "), "text/csv", None),
            ("not a number", row.replace(b"0,", b"x,", 1), "text/csv", None),
            ("empty cell", row + b",", "text/csv", None),
            ("short row", b"1,2,3", "text/csv", None),
            ("short second row", row + b"\n1,2", "text/csv", None),
            ("empty body", b"", "text/csv", None),
            ("only blank lines", b"\n \n", "text/csv", None),
            ("not UTF-8", b"\xff\xfe", "text/csv", None),
            ("json content type", b'{"a": 1}', "application/json", None),
            ("form content type", sample, "application/x-www-form-urlencoded", None),
            ("not acceptable", sample, "text/csv", "text/html"),
        ]
    if function == "sentiment":
        sample = (ROOT / "examples/sentiment/sample.jsonl").read_bytes()
        long = json.dumps({"features": [" ".join(["wonderful"] * 400), "bad " * 300]}).encode()
        return [
            ("sample", sample, "application/jsonlines", None),
            ("sample, accept json", sample, "application/jsonlines", "application/json"),
            ("sample, accept jsonlines", sample, "application/jsonlines", "application/jsonlines"),
            ("no content type", sample, None, None),
            ("json, default accept", b'{"features": ["I love this product!", "meh"]}', "application/json", None),
            ("json, accept json", b'{"features": ["I love it", "awful", ""]}', "application/json", "application/json"),
            ("unicode", '{"features": ["très bien 👍", "ひどい"]}'.encode(), "application/json", None),
            ("extra keys", b'{"features": ["fine"], "id": 7}', "application/json", None),
            ("over 256 tokens", long, "application/json", None),
            ("several lines, blank between", sample + b"\n\n" + sample, "application/jsonlines", None),
            ("invalid json line", sample + b"{oops", "application/jsonlines", None),
            ("invalid json body", b"{oops", "application/json", None),
            ("missing features", b'{"text": "hi"}', "application/json", None),
            ("features not strings", b'{"features": [1]}', "application/jsonlines", None),
            ("no sentences", b'{"features": []}', "application/json", None),
            ("empty body", b"", "application/jsonlines", None),
            ("not UTF-8", b"\xff\xfe", "application/jsonlines", None),
            ("csv content type", b"1,2", "text/csv", None),
            ("not acceptable", sample, "application/jsonlines", "text/csv"),
        ]
    if function == "vision":
        sample = (ROOT / "examples/vision/sample.jpg").read_bytes()
        sample_png = (ROOT / "examples/vision/sample.png").read_bytes()
        return [
            ("sample", sample, "image/jpeg", None, "pixels"),
            ("sample png, resized", sample_png, "image/png", None, "pixels"),
            ("sample, accept json", sample, "image/jpeg", "application/json", "pixels"),
            ("png 224x224", png(224, 224), "image/png", None),
            ("png 300x200, resized", png(300, 200), "image/png", None, "pixels"),
            ("jpeg sent as png", sample, "image/png", None),
            ("no content type", sample, None, None, "pixels"),
            ("not an image", b"hello", "image/jpeg", None),
            # Pillow refuses a truncated JPEG; zune-jpeg decodes what is there.
            ("truncated jpeg", sample[: len(sample) // 3], "image/jpeg", None, "known"),
            ("empty body", b"", "image/jpeg", None),
            ("csv content type", b"1,2", "text/csv", None),
            ("not acceptable", sample, "image/jpeg", "text/csv"),
        ]
    raise SystemExit(f"unknown function {function}")


def parse(content_type: str, body: bytes):
    if content_type.startswith("application/jsonlines"):
        return [json.loads(line) for line in body.decode().splitlines()]
    return json.loads(body)


def diff(a, b, tolerance: float, path: str = "$") -> list[str]:
    """Differences between two JSON values; floats may differ by tolerance."""
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return [f"{path}: keys {list(a)} != {list(b)}"]
        return [d for k in a for d in diff(a[k], b[k], tolerance, f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, tolerance, f"{path}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        if type(a) in (int, float) and type(b) in (int, float) and abs(a - b) <= tolerance:
            return []
        return [f"{path}: {a!r} != {b!r}"]
    return [] if a == b and type(a) is type(b) else [f"{path}: {a!r} != {b!r}"]


def same_classes(a, b, tolerance: float) -> list[str]:
    """The same top classes, in any order, with probabilities within tolerance."""
    pa, pb = {c["label"]: c["probability"] for c in a}, {c["label"]: c["probability"] for c in b}
    if set(pa) != set(pb):
        return [f"classes {sorted(pa)} != {sorted(pb)}"]
    return [f"class {k}: {pa[k]} != {pb[k]}" for k in pa if abs(pa[k] - pb[k]) > tolerance]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--function", required=True, choices=["digits", "sentiment", "vision"])
    parser.add_argument("--python", required=True, help="the baseline's /invocations URL")
    parser.add_argument("--nimbus", required=True, help="Nimbus's /v1/functions/NAME/invocations URL")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--pixel-tolerance", type=float, default=1e-3)
    parser.add_argument("-v", "--verbose", action="store_true", help="print both bodies of every case")
    args = parser.parse_args()

    # One request each first: it loads lazily started servers, and a Nimbus
    # instance that sat idle for over the function's timeout_s can answer
    # its first request with a spurious 504 (seen with dbf3b77's binary).
    first = cases(args.function)[0]
    for url in (args.python, args.nimbus):
        status = post(url, *first[1:4])[0]
        if status != 200:
            print(f"warm-up: {url} answered {status}")

    failed = 0
    for name, body, content_type, accept, *kind in cases(args.function):
        kind = kind[0] if kind else None
        py = post(args.python, body, content_type, accept)
        nb = post(args.nimbus, body, content_type, accept)
        problems = []
        if py[0] != nb[0]:
            problems.append(f"status {py[0]} != {nb[0]}")
        if py[1] != nb[1]:
            problems.append(f"content type {py[1]!r} != {nb[1]!r}")
        note = ""
        if not problems:
            a, b = parse(py[1], py[2]), parse(nb[1], nb[2])
            if py[0] == 200 and py[2] == nb[2]:
                note = "identical bytes"
            elif py[0] == 200 and kind == "pixels":
                problems += same_classes(a, b, args.pixel_tolerance)
                exact = diff(a, b, args.tolerance)
                note = "same within tolerance" if not exact else f"same classes within {args.pixel_tolerance}"
            elif py[0] == 200:
                problems += diff(a, b, args.tolerance)
                note = "same within tolerance"
            elif a["error"]["code"] != b["error"]["code"]:
                problems.append(f"error code {a['error']['code']} != {b['error']['code']}")
            else:
                same = a["error"]["message"] == b["error"]["message"]
                note = a["error"]["code"] + (", same message" if same else ", message differs")
        if kind == "known" and problems:
            note, problems = "known difference: " + "; ".join(problems), []
        failed += bool(problems)
        print(f"{'FAIL' if problems else 'ok  '} {py[0]} {name}: {'; '.join(problems) or note}")
        if args.verbose or problems or "differ" in note:
            print(f"     python: {py[2][:300]!r}\n     nimbus: {nb[2][:300]!r}")
    print(f"{args.function}: {failed} of {len(cases(args.function))} cases differ")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
