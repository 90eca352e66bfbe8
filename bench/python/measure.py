"""Rough numbers for the Python baseline, one model at a time: time from
process start to the first 200 from /invocations, resident memory once idle
(VmRSS from /proc), and the latency of sequential requests. Standard
library only; starts and stops its own server.

    .build/venv/bin/python bench/python/measure.py --function digits
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SAMPLES = {
    "digits": ("examples/digits/sample.csv", "text/csv"),
    "sentiment": ("examples/sentiment/sample.jsonl", "application/jsonlines"),
    "vision": ("examples/vision/sample.jpg", "image/jpeg"),
}


def post(port: int, body: bytes, content_type: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/invocations", body=body, headers={"Content-Type": content_type})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--function", required=True, choices=sorted(SAMPLES))
    parser.add_argument("--port", type=int, default=18199)
    parser.add_argument("--requests", type=int, default=200, help="sequential requests for the latency figures")
    args = parser.parse_args()

    path, content_type = SAMPLES[args.function]
    body = (ROOT / path).read_bytes()
    command = [
        sys.executable, str(HERE / "server.py"), "--function", args.function,
        "--model-dir", str(ROOT / "examples" / args.function / "model"), "--port", str(args.port),
    ]  # fmt: skip
    start = time.perf_counter()
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                status = post(args.port, body, content_type)
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"server exited with {server.returncode}")
                time.sleep(0.005)
        first = time.perf_counter() - start
        if status != 200:
            raise SystemExit(f"first answer was {status}")
        time.sleep(2)
        idle = rss_mb(server.pid)
        # Fresh connection per request, as curl does.
        latencies = []
        for _ in range(args.requests):
            t = time.perf_counter()
            post(args.port, body, content_type)
            latencies.append((time.perf_counter() - t) * 1000)
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        after = rss_mb(server.pid)
        print(
            f"{args.function}: start to first answer {first:.2f} s; RSS idle {idle:.0f} MB, "
            f"after {args.requests} requests {after:.0f} MB; latency p50 {p50:.2f} ms, p99 {p99:.2f} ms "
            f"({len(body)} B body, new connection each)"
        )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(server.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
