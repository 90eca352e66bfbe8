#!/usr/bin/env python3
"""Drive a server through the Open Inference Protocol (v2 REST) with the real
tritonclient, and check its answers against a case.json.

    python tests/oip/client.py --url 127.0.0.1:PORT --token TOKEN --model NAME \
        --case .build/exported/zipmap/case.json [--kserve]

case.json (written by scripts/make_exported.py or make_torch_fixture.py):
{"inputs": [{"name", "datatype", "shape", "data"}], "outputs": [same]}, data
flat and row-major, OIP datatype names.

Checks, each with `Authorization: Bearer TOKEN` (a fresh headers dict for
every call: tritonclient's infer() writes Inference-Header-Content-Length
into the dict it is given, which would leak into the next call):
- is_server_live, is_server_ready, is_model_ready(NAME)
- get_model_metadata(NAME): the same input and output names and datatypes
  as the case, shapes of the same rank whose dims are -1 or the case's
- infer with binary tensors (inputs after the JSON header, outputs asked
  with binary_data=True), then with JSON tensors (binary_data=False on
  inputs and outputs); each time the response names the model, every output
  comes back in the form asked for, with the case's datatype and shape,
  and values within 1e-4 relative / 1e-5 absolute (FP32, FP64), 1e-2 (FP16),
  equal otherwise
- infer with an unknown input name raises InferenceServerException: a 4xx
  status (not 401/403) and a non-empty message that the server sent as {"error": ...}
- with --kserve, the same through kserve.InferenceRESTClient (needs
  tests/oip/requirements-kserve.txt): health and model readiness (KServe
  reads {"live": true} / {"ready": true} bodies), binary and JSON infer
  (FP16 inputs go binary either way: KServe's client refuses FP16 in JSON),
  and the unknown-input error.

Details and the metadata go to stderr; stdout gets one JSON line:
{"ok", "model", "case", "checks": {name: true/false}, "failures": [...]}.
Exit status 0 only when every check passed.
"""

import argparse
import asyncio
import json
import sys
import traceback

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

NP_DTYPE = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
# (relative, absolute)
TOLERANCE = {"FP32": (1e-4, 1e-5), "FP64": (1e-4, 1e-5), "FP16": (1e-2, 1e-2)}
UNKNOWN_INPUT = "no_such_input"
# What tritonclient says when an error body is not {"error": "..."}.
CLIENT_DECODE_FAILURE = "an exception occurred in the client while decoding the response"


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def to_array(tensor: dict) -> np.ndarray:
    dtype = NP_DTYPE[tensor["datatype"]]
    data = tensor["data"]
    if tensor["datatype"] == "BYTES":
        data = [d.encode() if isinstance(d, str) else d for d in data]
    return np.array(data, dtype=dtype).reshape(tensor["shape"])


def mismatch(want: dict, got: np.ndarray | None, got_datatype: str | None) -> str | None:
    """Why `got` is not the case's tensor `want`, or None when it is."""
    name = want["name"]
    if got is None:
        return f"{name}: missing from the response"
    if got_datatype != want["datatype"]:
        return f"{name}: datatype {got_datatype}, expected {want['datatype']}"
    if list(got.shape) != list(want["shape"]):
        return f"{name}: shape {list(got.shape)}, expected {want['shape']}"
    expected = to_array(want)
    if want["datatype"] in TOLERANCE:
        rtol, atol = TOLERANCE[want["datatype"]]
        g, e = got.astype(np.float64), expected.astype(np.float64)
        if not np.allclose(g, e, rtol=rtol, atol=atol):
            worst = int(np.argmax(np.abs(g - e).reshape(-1)))
            return (
                f"{name}: values differ beyond rtol={rtol} atol={atol}, e.g. flat index {worst}: "
                f"{g.reshape(-1)[worst]!r} vs {e.reshape(-1)[worst]!r}"
            )
    elif not np.array_equal(got, expected):
        return f"{name}: values {got.reshape(-1).tolist()[:16]}, expected {expected.reshape(-1).tolist()[:16]}"
    return None


def metadata_mismatches(meta: dict, case: dict) -> list:
    problems = []
    for side in ("inputs", "outputs"):
        declared = {t["name"]: t for t in meta.get(side) or []}
        wanted = {t["name"]: t for t in case[side]}
        if set(declared) != set(wanted):
            problems.append(f"metadata {side}: {sorted(declared)}, expected {sorted(wanted)}")
            continue
        for name, want in wanted.items():
            got = declared[name]
            if got.get("datatype") != want["datatype"]:
                problems.append(f"metadata {side} {name}: datatype {got.get('datatype')}, expected {want['datatype']}")
            shape = got.get("shape")
            if not isinstance(shape, list) or len(shape) != len(want["shape"]):
                problems.append(f"metadata {side} {name}: shape {shape}, expected rank {len(want['shape'])}")
            elif any(d != -1 and d != w for d, w in zip(shape, want["shape"])):
                problems.append(f"metadata {side} {name}: shape {shape} cannot hold {want['shape']}")
    return problems


class Run:
    def __init__(self) -> None:
        self.checks: dict = {}
        self.failures: list = []

    def record(self, check: str, problems) -> None:
        problems = [p for p in (problems if isinstance(problems, list) else [problems]) if p]
        self.checks[check] = not problems
        for p in problems:
            self.failures.append(f"{check}: {p}")
            log(f"FAIL {check}: {p}")
        if not problems:
            log(f"ok   {check}")

    def step(self, check: str, fn) -> None:
        """Run fn(), which returns a list of problems; an exception is one."""
        try:
            problems = fn()
        except Exception as e:  # noqa: BLE001 (every failure is reported, none stops the run)
            log(traceback.format_exc())
            problems = [f"{type(e).__name__}: {e}"]
        self.record(check, problems)


def triton_checks(run: Run, args, case: dict, auth) -> None:
    client = httpclient.InferenceServerClient(url=args.url, network_timeout=120.0)

    run.step("live", lambda: [] if client.is_server_live(headers=auth()) else ["is_server_live() is False"])
    run.step("ready", lambda: [] if client.is_server_ready(headers=auth()) else ["is_server_ready() is False"])
    run.step(
        "model_ready",
        lambda: [] if client.is_model_ready(args.model, headers=auth()) else [f"is_model_ready({args.model!r}) is False"],
    )

    def metadata():
        meta = client.get_model_metadata(args.model, headers=auth())
        log("metadata " + json.dumps(meta))
        problems = metadata_mismatches(meta, case)
        if meta.get("name") != args.model:
            problems.append(f"metadata name {meta.get('name')!r}, expected {args.model!r}")
        return problems

    run.step("metadata", metadata)

    def infer(binary: bool, input_names=None):
        inputs = []
        for i, t in enumerate(case["inputs"]):
            name = input_names[i] if input_names else t["name"]
            inp = httpclient.InferInput(name, list(t["shape"]), t["datatype"])
            inp.set_data_from_numpy(to_array(t), binary_data=binary)
            inputs.append(inp)
        outputs = [httpclient.InferRequestedOutput(t["name"], binary_data=binary) for t in case["outputs"]]
        return client.infer(args.model, inputs, outputs=outputs, headers=auth())

    def check_result(binary: bool):
        result = infer(binary)
        response = result.get_response()
        log(f"response ({'binary' if binary else 'json'}) " + json.dumps(response)[:2000])
        problems = []
        if response.get("model_name") != args.model:
            problems.append(f"response model_name {response.get('model_name')!r}, expected {args.model!r}")
        for want in case["outputs"]:
            out = result.get_output(want["name"])
            if out is None:
                problems.append(f"{want['name']}: missing from the response")
                continue
            has_binary = "binary_data_size" in (out.get("parameters") or {})
            if binary and not has_binary:
                problems.append(f"{want['name']}: asked binary_data=True, came as JSON data")
            if not binary and (has_binary or "data" not in out):
                problems.append(f"{want['name']}: asked binary_data=False, came without JSON data")
            problems.append(mismatch(want, result.as_numpy(want["name"]), out.get("datatype")))
        return problems

    run.step("infer_binary", lambda: check_result(True))
    run.step("infer_json", lambda: check_result(False))

    def unknown_input():
        names = [UNKNOWN_INPUT] + [t["name"] for t in case["inputs"][1:]]
        try:
            infer(True, names)
        except InferenceServerException as e:
            log(f"error for an unknown input: status {e.status()} message {e.message()!r}")
            problems = []
            if not (e.message() or "").strip():
                problems.append("empty error message")
            elif CLIENT_DECODE_FAILURE in e.message():
                problems.append(f"error body is not {{\"error\": ...}}: {e.message()!r}")
            if not str(e.status() or "").startswith("4") or str(e.status()) in ("401", "403"):
                problems.append(f"status {e.status()}, expected a 4xx other than 401/403")
            return problems
        return ["infer with an unknown input name succeeded"]

    run.step("error_unknown_input", unknown_input)
    client.close()


async def kserve_checks(run: Run, args, case: dict, auth) -> None:
    import httpx
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.protocol.infer_type import RequestedOutput

    base = f"http://{args.url}"
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=120))

    async def astep(check: str, coro_fn) -> None:
        try:
            problems = await coro_fn()
        except Exception as e:  # noqa: BLE001
            log(traceback.format_exc())
            problems = [f"{type(e).__name__}: {e}"]
        run.record(check, problems)

    async def live():
        return [] if await client.is_server_live(base, headers=auth()) is True else ['no {"live": true}']

    async def ready():
        return [] if await client.is_server_ready(base, headers=auth()) is True else ['no {"ready": true}']

    async def model_ready():
        return [] if await client.is_model_ready(base, args.model, headers=auth()) else ["model not ready"]

    def request(binary: bool, input_names=None) -> InferRequest:
        inputs = []
        for i, t in enumerate(case["inputs"]):
            inp = InferInput(input_names[i] if input_names else t["name"], list(t["shape"]), t["datatype"])
            # KServe's client refuses FP16 in JSON ("Sending FP16 data via JSON is not supported").
            inp.set_data_from_numpy(to_array(t), binary_data=binary or t["datatype"] == "FP16")
            inputs.append(inp)
        outputs = [RequestedOutput(t["name"], parameters={"binary_data": binary}) for t in case["outputs"]]
        return InferRequest(model_name=args.model, infer_inputs=inputs, request_outputs=outputs)

    async def infer(binary: bool):
        response = await client.infer(base, request(binary), model_name=args.model, headers=auth())
        got = {o.name: o for o in response.outputs}
        problems = []
        if response.model_name != args.model:
            problems.append(f"response model_name {response.model_name!r}, expected {args.model!r}")
        for want in case["outputs"]:
            out = got.get(want["name"])
            problems.append(mismatch(want, None if out is None else out.as_numpy(), None if out is None else out.datatype))
        return problems

    async def unknown_input():
        names = [UNKNOWN_INPUT] + [t["name"] for t in case["inputs"][1:]]
        try:
            await client.infer(base, request(True, names), model_name=args.model, headers=auth())
        except httpx.HTTPStatusError as e:
            log(f"kserve error for an unknown input: {e}")
            problems = []
            if not str(e).strip():
                problems.append("empty error message")
            if not 400 <= e.response.status_code < 500 or e.response.status_code in (401, 403):
                problems.append(f"status {e.response.status_code}, expected a 4xx other than 401/403")
            return problems
        return ["infer with an unknown input name succeeded"]

    await astep("kserve_live", live)
    await astep("kserve_ready", ready)
    await astep("kserve_model_ready", model_ready)
    await astep("kserve_infer_binary", lambda: infer(True))
    await astep("kserve_infer_json", lambda: infer(False))
    await astep("kserve_error_unknown_input", unknown_input)
    await client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="host:port of the server, no scheme")
    parser.add_argument("--token", default="", help="bearer token; empty sends no Authorization header")
    parser.add_argument("--model", required=True)
    parser.add_argument("--case", required=True, help="case.json with inputs and expected outputs")
    parser.add_argument("--kserve", action="store_true", help="also run the checks with kserve.InferenceRESTClient")
    args = parser.parse_args()
    for scheme in ("http://", "https://"):
        if args.url.startswith(scheme):
            args.url = args.url[len(scheme) :]
    args.url = args.url.rstrip("/")

    with open(args.case) as f:
        case = json.load(f)

    def auth() -> dict:
        return {"Authorization": f"Bearer {args.token}"} if args.token else {}

    run = Run()
    try:
        triton_checks(run, args, case, auth)
    except Exception as e:  # noqa: BLE001 (e.g. the client could not be made)
        log(traceback.format_exc())
        run.record("tritonclient", [f"{type(e).__name__}: {e}"])
    if args.kserve:
        try:
            asyncio.run(kserve_checks(run, args, case, auth))
        except Exception as e:  # noqa: BLE001 (e.g. kserve is not installed)
            log(traceback.format_exc())
            run.record("kserve", [f"{type(e).__name__}: {e}"])

    ok = bool(run.checks) and not run.failures
    summary = {"ok": ok, "model": args.model, "case": args.case, "checks": run.checks, "failures": run.failures}
    print(json.dumps(summary), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
