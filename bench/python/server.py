"""The baseline for Nimbus's benchmarks: the model server a SageMaker user
writes today, ONNX Runtime behind FastAPI on uvicorn, one model per process
(like one SageMaker container per endpoint).

    python bench/python/server.py --function digits \\
        --model-dir examples/digits/model --port 8080

It speaks SageMaker's container contract, `GET /ping` (200 once the model is
loaded) and `POST /invocations`, and the same request and response formats
as the Nimbus example handlers (examples/*/src/lib.rs and guest-sdk/src/
body.rs): the same content types and `Accept` negotiation, the same JSON
keys in the same order, the same HTTP statuses (400 bad input, 415
unsupported content type, 406 not acceptable, 413 over the payload limit,
500 handler failure) and Nimbus's error body, `{"error": {"code": ...,
"message": ...}}`.

Design choices, as for production:

- Sessions, the tokenizer and everything else that is read from disk are
  loaded once, in the app's lifespan startup. uvicorn runs that before it
  binds the port, so `/ping` can only ever answer 200 once the model is in.
- `/invocations` is an `async def` that reads the body on the event loop,
  then runs decode, preprocessing, inference and encoding in one call on
  Starlette's threadpool (`run_in_threadpool`, anyio's 40 threads). The
  heavy parts release the GIL (ONNX Runtime's `run`, the Rust tokenizer's
  `encode_batch`, Pillow's decoders and resampling, numpy on large arrays),
  so concurrent requests overlap, and slow clients never block the loop.
  A plain `def` endpoint would run on the same threadpool, but it cannot
  `await request.body()`, and a `bytes = Body()` parameter makes FastAPI
  parse JSON bodies itself (with its own 422s) where the errors must be the
  handler's. `InferenceSession.run` and `Tokenizer.encode_batch` are safe
  to call from several threads at once on one shared object.
- One model per process, so each model's extra imports (tokenizers,
  Pillow) happen only in the process that serves it.
- ONNX Runtime runs with its defaults (all graph optimizations; intra-op
  threads = physical cores), except with `--workers N > 1`, where each
  process gets cores / N intra-op threads so that the workers do not fight
  over the cores. `--threads` overrides it.
- uvicorn with its `[standard]` extras, so uvloop and httptools are used.
  The access log is off by default (`--access-log` turns it on): Nimbus
  writes no line per request either, and a benchmark should not measure
  logging.
- Probabilities are written with the shortest decimal that reads back as
  the same float32, as serde_json does in the Rust handlers, so answers
  from the two servers diff cleanly.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

log = logging.getLogger("uvicorn.error")  # uvicorn configures it, in every worker

JSON = "application/json"
JSON_LINES = "application/jsonlines"
CSV = "text/csv"
JPEG = "image/jpeg"
PNG = "image/png"

# Nimbus's default `payload_limit_bytes`, and SageMaker real-time's limit.
DEFAULT_PAYLOAD_LIMIT = 6 * 1024 * 1024


# Errors: each one is an HTTP status and a stable code, as in docs/api.md.


class InvocationError(Exception):
    status = 500
    code = "handler_failed"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadInput(InvocationError):
    status = 400
    code = "bad_input"


class UnsupportedMediaType(InvocationError):
    status = 415
    code = "unsupported_media_type"


class NotAcceptable(InvocationError):
    status = 406
    code = "not_acceptable"


class PayloadTooLarge(InvocationError):
    status = 413
    code = "payload_too_large"


# Request and response bodies, as guest-sdk/src/body.rs reads and writes them.


def media_type(header: str) -> str:
    return header.split(";", 1)[0].strip()


def expect_content_type(content_type: str, supported: list[str]) -> str:
    """The request's media type if it is one of `supported`; an empty one
    counts as the first."""
    mt = media_type(content_type).lower()
    if not mt:
        return supported[0]
    if mt in supported:
        return mt
    raise UnsupportedMediaType(f"`{mt}` is not supported; send one of: {', '.join(supported)}")


def negotiate(accept: str, offered: list[str]) -> str:
    """The first of `offered` that the first matching entry of `Accept`
    allows (in the order the caller listed them; `*/*`, `type/*` and an
    empty `Accept` allow anything)."""
    wanted = [t.lower() for t in (media_type(part) for part in accept.split(",")) if t]
    if not wanted:
        return offered[0]
    for want in wanted:
        for have in offered:
            if want == "*/*" or want == have or (want.endswith("/*") and have.split("/")[0] == want[:-2]):
                return have
    raise NotAcceptable(f"cannot produce `{accept}`; accept one of: {', '.join(offered)}")


def text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"body is not UTF-8: {e}") from None


def lines(body: bytes):
    """(line number, line) for every non-blank line."""
    for i, line in enumerate(text(body).split("\n"), start=1):
        if line.strip():
            yield i, line


def json_body(body: bytes):
    try:
        return json.loads(body)
    except ValueError as e:
        raise BadInput(f"invalid JSON body: {e}") from None


def json_lines_body(body: bytes) -> list:
    values = []
    for i, line in lines(body):
        try:
            values.append(json.loads(line))
        except ValueError as e:
            raise BadInput(f"line {i}: invalid JSON: {e}") from None
    return values


def csv_rows(body: bytes) -> list[list[float]]:
    rows = []
    for i, line in lines(body):
        cells = line.split(",")
        try:
            rows.append([float(c) for c in cells])
        except ValueError:
            for j, cell in enumerate(cells, start=1):
                try:
                    float(cell)
                except ValueError:
                    raise BadInput(f"row {i}, column {j}: `{cell.strip()}` is not a number") from None
    return rows


def dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def json_response(value) -> tuple[str, bytes]:
    return JSON, dumps(value).encode()


def json_lines_response(items) -> tuple[str, bytes]:
    return JSON_LINES, "".join(dumps(item) + "\n" for item in items).encode()


def f32(values: np.ndarray) -> list[float]:
    """float32 values as the Python floats whose shortest repr is the
    float32's shortest repr (0.99, not 0.9900000095367432)."""
    return [float(str(v)) for v in values.astype(np.float32)]


# Models. Each reads its artifacts from the model directory once; `handle`
# maps (content type, accept, body) to (content type, body) or raises.


def session(path: Path, options: ort.SessionOptions) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class Digits:
    """scikit-learn's 8x8 digits: CSV rows of 64 pixel values in, one
    `{"predicted_label", "probability"}` per row out."""

    PIXELS = 64

    def __init__(self, model_dir: Path, options: ort.SessionOptions):
        self.forest = session(model_dir / "digits.onnx", options)

    def handle(self, content_type: str, accept: str, body: bytes) -> tuple[str, bytes]:
        expect_content_type(content_type, [CSV])
        out = negotiate(accept, [JSON, JSON_LINES])
        rows = csv_rows(body)
        for i, row in enumerate(rows, start=1):
            if len(row) != self.PIXELS:
                raise BadInput(f"row {i} has {len(row)} values; expected {self.PIXELS}")
        if not rows:
            raise BadInput("no rows: send CSV with 64 numbers per line")
        labels, probabilities = self.forest.run(
            ["label", "probabilities"], {"input": np.asarray(rows, dtype=np.float32)}
        )
        predictions = [
            {"predicted_label": label, "probability": p}
            for label, p in zip(labels.tolist(), f32(probabilities.max(axis=1)))
        ]
        return json_response(predictions) if out == JSON else json_lines_response(predictions)


class Sentiment:
    """all-MiniLM-L6-v2 sentence embeddings and a logistic head: JSON Lines
    (or one JSON object) `{"features": ["text", ...]}` in, one
    `{"predicted_label", "probability"}` per sentence out."""

    def __init__(self, model_dir: Path, options: ort.SessionOptions):
        from tokenizers import Tokenizer  # only this model's container needs it

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # tokenizer.json pads and truncates to a fixed 128; like the Rust
        # handler, pad to the longest in the batch and truncate at 256.
        self.tokenizer.enable_padding()
        self.tokenizer.enable_truncation(256)
        self.encoder = session(model_dir / "encoder.onnx", options)
        self.head = session(model_dir / "head.onnx", options)

    @staticmethod
    def features(value) -> list[str]:
        if not isinstance(value, dict):
            raise ValueError('expected an object like {"features": ["some text"]}')
        if "features" not in value:
            raise ValueError("missing field `features`")
        features = value["features"]
        if not isinstance(features, list) or not all(isinstance(s, str) for s in features):
            raise ValueError("`features` must be an array of strings")
        return features

    def handle(self, content_type: str, accept: str, body: bytes) -> tuple[str, bytes]:
        sentences = []
        if expect_content_type(content_type, [JSON_LINES, JSON]) == JSON:
            try:
                sentences = self.features(json_body(body))
            except ValueError as e:
                raise BadInput(f"invalid JSON body: {e}") from None
        else:
            for i, value in enumerate(json_lines_body(body), start=1):
                try:
                    sentences.extend(self.features(value))
                except ValueError as e:
                    raise BadInput(f"line {i}: invalid JSON: {e}") from None
        out = negotiate(accept, [JSON_LINES, JSON])
        if not sentences:
            raise BadInput('no sentences: send {"features": ["some text"]}')
        predictions = self.classify(sentences)
        return json_response(predictions) if out == JSON else json_lines_response(predictions)

    def classify(self, sentences: list[str]) -> list[dict]:
        try:
            encodings = self.tokenizer.encode_batch(sentences)
        except Exception as e:  # tokenizers raises plain Exception
            raise BadInput(str(e)) from None
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (hidden,) = self.encoder.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )
        # Mean over the attention mask, then L2-normalized, as
        # sentence-transformers does for all-MiniLM-L6-v2.
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        embeddings = (pooled / norms).astype(np.float32)
        labels, probabilities = self.head.run(["label", "probabilities"], {"input": embeddings})
        return [
            {"predicted_label": label, "probability": p}
            for label, p in zip(labels.tolist(), f32(probabilities.max(axis=1)))
        ]


class Vision:
    """MobileNetV2 on ImageNet: a JPEG or PNG in, the top 5 classes out as
    `[{"label": index, "probability": p}, ...]`, most probable first."""

    SIZE = 224
    MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    TOP = 5

    def __init__(self, model_dir: Path, options: ort.SessionOptions):
        from PIL import Image  # only this model's container needs it

        self.image = Image
        self.model = session(model_dir / "mobilenet_v2.onnx", options)

    def handle(self, content_type: str, accept: str, body: bytes) -> tuple[str, bytes]:
        media = expect_content_type(content_type, [JPEG, PNG])
        negotiate(accept, [JSON])
        pixels = self.decode(body, media)
        x = (pixels.astype(np.float32) / 255.0 - self.MEAN) / self.STD
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])  # HWC -> NCHW
        (probabilities,) = self.model.run(["probabilities"], {"input": x})
        p = probabilities[0]
        top = np.argsort(-p, kind="stable")[: self.TOP]
        return json_response([{"label": i, "probability": q} for i, q in zip(top.tolist(), f32(p[top]))])

    def decode(self, body: bytes, media: str) -> np.ndarray:
        """RGB pixels, HWC, 224x224 (bilinear, only when not already)."""
        # Only the format the caller declared: keeps every other decoder's
        # attack surface out of the server.
        formats = ["PNG"] if media == PNG else ["JPEG"]
        try:
            with self.image.open(io.BytesIO(body), formats=formats) as img:
                img = img.convert("RGB")
        except Exception as e:  # any failure to decode untrusted bytes is the input's
            raise BadInput(f"cannot decode the body as {media}: {e}") from None
        if img.size != (self.SIZE, self.SIZE):
            img = img.resize((self.SIZE, self.SIZE), self.image.Resampling.BILINEAR)
        return np.asarray(img)


class Gbm:
    """A gradient-boosted classifier (LightGBM exported by onnxmltools with
    its defaults, `model.onnx`) behind the Open Inference Protocol's JSON
    infer, as Nimbus serves a model-only deploy: `{"inputs": [{"name",
    "datatype", "shape", "data"}]}` in, `label` [rows] and `probabilities`
    [rows, classes] (the ZipMap's maps as rows, classes in key order) out."""

    def __init__(self, model_dir: Path, options: ort.SessionOptions):
        self.model = session(model_dir / "model.onnx", options)

    def handle(self, content_type: str, accept: str, body: bytes) -> tuple[str, bytes]:
        expect_content_type(content_type, [JSON])
        negotiate(accept, [JSON])
        request = json_body(body)
        try:
            feed = {
                i["name"]: np.asarray(i["data"], dtype=np.float32).reshape(i["shape"]) for i in request["inputs"]
            }
        except (KeyError, TypeError, ValueError) as e:
            raise BadInput(f"invalid inference request: {e}") from None
        labels, maps = self.model.run(["label", "probabilities"], feed)
        classes = sorted(maps[0]) if maps else []
        rows = [[m[c] for c in classes] for m in maps]
        outputs = [
            {"name": "label", "datatype": "INT64", "shape": [len(labels)], "data": labels.tolist()},
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [len(rows), len(classes)],
                "data": f32(np.asarray(rows, dtype=np.float32).reshape(-1)),
            },
        ]
        return json_response({"model_name": "gbm", "model_version": "1", "outputs": outputs})


MODELS: dict[str, Callable[[Path, ort.SessionOptions], object]] = {
    "digits": Digits,
    "gbm": Gbm,
    "sentiment": Sentiment,
    "vision": Vision,
}


# The app. Its configuration comes from the environment so that every
# uvicorn worker process builds the same one (`server.py` sets it from flags).

ENV_FUNCTION = "BENCH_PY_FUNCTION"
ENV_MODEL_DIR = "BENCH_PY_MODEL_DIR"
ENV_THREADS = "BENCH_PY_THREADS"
ENV_PAYLOAD_LIMIT = "BENCH_PY_PAYLOAD_LIMIT"


def load_model() -> object:
    function = os.environ[ENV_FUNCTION]
    model_dir = Path(os.environ[ENV_MODEL_DIR])
    options = ort.SessionOptions()
    threads = int(os.environ.get(ENV_THREADS, "0"))
    if threads > 0:
        options.intra_op_num_threads = threads
    model = MODELS[function](model_dir, options)
    log.info("loaded %s from %s (intra-op threads: %s)", function, model_dir, threads or "default")
    return model


def create_app() -> FastAPI:
    limit = int(os.environ.get(ENV_PAYLOAD_LIMIT, DEFAULT_PAYLOAD_LIMIT))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.model = load_model()
        yield

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.model = None

    @app.exception_handler(InvocationError)
    async def invocation_error(request: Request, e: InvocationError) -> JSONResponse:
        return JSONResponse({"error": {"code": e.code, "message": e.message}}, status_code=e.status)

    @app.get("/ping")
    async def ping() -> Response:
        return Response(status_code=200 if app.state.model is not None else 503)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"request body is over this function's limit of {limit} bytes")
        body = await request.body()
        if len(body) > limit:
            raise PayloadTooLarge(f"request body is over this function's limit of {limit} bytes")
        content_type = request.headers.get("content-type", "")
        accept = request.headers.get("accept", "*/*")
        try:
            media, out = await run_in_threadpool(app.state.model.handle, content_type, accept, body)
        except InvocationError:
            raise
        except Exception as e:
            log.exception("invocation failed")
            raise InvocationError(f"handler failed: {e}") from None
        return Response(content=out, media_type=media)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--function", required=True, choices=sorted(MODELS))
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1, help="processes, each with its own copy of the model")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="ONNX Runtime intra-op threads per process (default: ONNX Runtime's, or cores / workers)",
    )
    parser.add_argument("--payload-limit", type=int, default=DEFAULT_PAYLOAD_LIMIT, help="bytes")
    parser.add_argument("--access-log", action="store_true", help="log one line per request")
    args = parser.parse_args()

    threads = args.threads
    if threads <= 0 and args.workers > 1:
        threads = max(1, (os.cpu_count() or 1) // args.workers)
    os.environ[ENV_FUNCTION] = args.function
    os.environ[ENV_MODEL_DIR] = str(args.model_dir.resolve())
    os.environ[ENV_THREADS] = str(threads)
    os.environ[ENV_PAYLOAD_LIMIT] = str(args.payload_limit)

    import uvicorn

    uvicorn.run(
        "server:create_app",
        factory=True,
        app_dir=str(Path(__file__).resolve().parent),
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=args.access_log,
        log_level="info",
    )


if __name__ == "__main__":
    main()
