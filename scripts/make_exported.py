"""Write test fixtures: models exported the way users export them.

Usage: make_exported.py [OUT]   (OUT defaults to .build/exported)

One folder per case, each with exactly one `model.onnx` (plus its
`model.onnx.data` in external/) and a `case.json`. For the cases Nimbus
serves, case.json holds a sample request and onnxruntime's answer to it, with
Open Inference Protocol datatype names and flat row-major data:

  {"inputs":  [{"name", "datatype", "shape", "data"}, ...],
   "outputs": [{"name", "datatype", "shape", "data"}, ...]}

A ZipMap output (seq(map(int64, float))) is recorded as the dense
[batch, classes] FP32 tensor, columns in sorted key order, and the output
entry (and the top level) carries "classes": [...]. FP16 data are plain
numbers, BOOL data true/false.

Cases:
- zipmap/    skl2onnx, default options: StandardScaler + LogisticRegression
             on iris; `output_probability` is seq(map(int64, float)).
- lightgbm/  onnxmltools.convert_lightgbm, default options (ZipMap), 20
             trees on breast_cancer. As onnxmltools 1.16 writes it, `label`
             is declared int64 [1] yet comes out [batch] (onnxruntime warns
             "Expected shape from model of {1} does not match actual shape").
- external/  an MLPRegressor trained on diabetes, its weights in a Gemm/Relu
             graph saved with every initializer in `model.onnx.data`.
- boolfp16/  onnx.helper: FLOAT16 and BOOL inputs and outputs.
- strings/   a string-tensor input (OneHotEncoder on StringTensorType): Nimbus
             refuses it at deploy; case.json is {"refused_input": NAME}.
- strlabels/ a classifier trained on string labels, zipmap off: its label
             output is a string tensor, refused at deploy;
             case.json is {"refused_output": NAME}.

Every model is checked by loading it in onnxruntime. The cases are written
to a temporary sibling folder that replaces OUT only once all succeeded, so
a failed run leaves no partial result behind for make to take as done.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SEED = 7

OIP_DATATYPE = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.bool_): "BOOL",
}


def tensor(name: str, value: np.ndarray) -> dict:
    value = np.asarray(value)
    if value.dtype.kind in "OUS":
        datatype = "BYTES"
        data = [v.decode() if isinstance(v, bytes) else str(v) for v in value.reshape(-1)]
    else:
        datatype = OIP_DATATYPE[value.dtype]
        # tolist() gives Python floats (exact for FP16 and FP32), ints and bools.
        data = value.reshape(-1).tolist()
    return {"name": name, "datatype": datatype, "shape": list(value.shape), "data": data}


def session(path: Path) -> ort.InferenceSession:
    # From the path, so external data is found beside the model. Errors only:
    # lightgbm's declared label shape draws a warning on every run.
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def signature(sess: ort.InferenceSession) -> str:
    def row(a):
        return f"{a.name}: {a.type} {a.shape}"

    ins = "; ".join(row(a) for a in sess.get_inputs())
    outs = "; ".join(row(a) for a in sess.get_outputs())
    return f"in [{ins}] out [{outs}]"


def write_case(folder: Path, model_path: Path, feeds: dict, extra: dict | None = None) -> None:
    """Run the sample through onnxruntime and record request and answer."""
    sess = session(model_path)
    names = [o.name for o in sess.get_outputs()]
    results = sess.run(names, feeds)
    outputs, classes = [], None
    for name, value in zip(names, results):
        if isinstance(value, list):
            # ZipMap: one {class: probability} dict per row.
            classes = sorted(value[0].keys())
            dense = np.array([[row[c] for c in classes] for row in value], dtype=np.float32)
            entry = tensor(name, dense)
            entry["classes"] = [c if isinstance(c, str) else int(c) for c in classes]
            outputs.append(entry)
        else:
            outputs.append(tensor(name, value))
    case = {"inputs": [tensor(k, v) for k, v in feeds.items()], "outputs": outputs}
    if classes is not None:
        case["classes"] = outputs[[o.get("classes") is not None for o in outputs].index(True)]["classes"]
    case.update(extra or {})
    (folder / "case.json").write_text(json.dumps(case, indent=1) + "\n")
    print(f"{folder.name}: {signature(sess)}")


def save(model: onnx.ModelProto, folder: Path) -> Path:
    folder.mkdir(parents=True)
    path = folder / "model.onnx"
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def zipmap(folder: Path) -> None:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=1000))]).fit(x, y)
    # Default options: the classifier ends in a ZipMap.
    model = convert_sklearn(pipe, initial_types=[("input", FloatTensorType([None, 4]))])
    path = save(model, folder)
    write_case(folder, path, {"input": x[[0, 60, 120]]})


def lightgbm(folder: Path) -> None:
    import onnxmltools
    from lightgbm import LGBMClassifier
    from onnxmltools.convert.common.data_types import FloatTensorType
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    clf = LGBMClassifier(n_estimators=20, num_leaves=8, random_state=SEED, deterministic=True, n_jobs=1, verbose=-1)
    clf.fit(x, y)
    # Default options: zipmap=True.
    model = onnxmltools.convert_lightgbm(clf, initial_types=[("input", FloatTensorType([None, x.shape[1]]))])
    path = save(model, folder)
    # One row of each class.
    write_case(folder, path, {"input": x[[0, 19]]})


def external(folder: Path) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.neural_network import MLPRegressor

    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    reg = MLPRegressor(hidden_layer_sizes=(16,), max_iter=5000, random_state=SEED).fit(x, y)
    # Its trained weights as a plain Gemm/Relu/Gemm graph. Not skl2onnx: its
    # MLP graph has a Reshape whose int64 shape initializer onnxruntime 1.32
    # cannot read from external data ("Cannot parse data from external
    # tensors") once size_threshold=0 moves it out.
    (w1, w2), (b1, b2) = reg.coefs_, reg.intercepts_
    weights = [
        numpy_helper.from_array(w1.astype(np.float32), "w1"),
        numpy_helper.from_array(b1.astype(np.float32), "b1"),
        numpy_helper.from_array(w2.astype(np.float32), "w2"),
        numpy_helper.from_array(b2.astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["hidden"], name="fc1"),
        helper.make_node("Relu", ["hidden"], ["activated"], name="relu"),
        helper.make_node("Gemm", ["activated", "w2", "b2"], ["output"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "diabetes_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", x.shape[1]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="nimbus make_exported.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True)
    path = folder / "model.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    data = folder / "model.onnx.data"
    assert data.stat().st_size > 0, "no external data written"
    data.chmod(0o644)  # onnx creates it 0600
    # The graph file must really point elsewhere for its weights.
    graph = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in graph.graph.initializer), "an initializer stayed inline"
    sample = x[:3]
    (got,) = session(path).run(None, {"input": sample})
    assert np.allclose(got[:, 0], reg.predict(sample), rtol=1e-4, atol=1e-3), (got, reg.predict(sample))
    write_case(folder, path, {"input": sample})


def boolfp16(folder: Path) -> None:
    two = numpy_helper.from_array(np.array(2, dtype=np.float16), "two")
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["doubled"], name="double"),
        helper.make_node("Where", ["mask", "doubled", "x"], ["y"], name="select"),
        helper.make_node("Not", ["mask"], ["flipped"], name="flip"),
    ]
    graph = helper.make_graph(
        nodes,
        "boolfp16",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 4]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", 4]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 4]),
            helper.make_tensor_value_info("flipped", TensorProto.BOOL, ["batch", 4]),
        ],
        [two],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="nimbus make_exported.py")
    model.ir_version = 8
    path = save(model, folder)
    # Values exact in FP16, doubled ones too.
    x = np.array([[0.5, -1.25, 3.0, 1000.0], [-0.0009765625, 2.5, -7.75, 0.0]], dtype=np.float16)
    mask = np.array([[True, False, True, False], [False, True, True, False]])
    write_case(folder, path, {"x": x, "mask": mask})


def strings(folder: Path) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(SEED)
    colors = np.array(["red", "green", "blue", "yellow"])
    x = colors[rng.integers(0, 4, 200)].reshape(-1, 1)
    y = np.isin(x[:, 0], ["red", "yellow"]).astype(np.int64)
    pipe = Pipeline([("onehot", OneHotEncoder(handle_unknown="ignore")), ("clf", LogisticRegression())]).fit(x, y)
    # zipmap off: only the input is a string tensor.
    model = to_onnx(
        pipe,
        initial_types=[("color", StringTensorType([None, 1]))],
        options={id(pipe.steps[-1][1]): {"zipmap": False}},
    )
    path = save(model, folder)
    sess = session(path)
    label, _ = sess.run(None, {"color": np.array([["red"], ["blue"]], dtype=object)})
    assert label.tolist() == [1, 0], label
    (folder / "case.json").write_text(json.dumps({"refused_input": "color"}, indent=1) + "\n")
    print(f"{folder.name}: {signature(sess)}")


def strlabels(folder: Path) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    iris = load_iris()
    x = iris.data.astype(np.float32)
    y = iris.target_names[iris.target]  # "setosa", "versicolor", "virginica"
    clf = DecisionTreeClassifier(max_depth=3, random_state=SEED).fit(x, y)
    model = to_onnx(clf, initial_types=[("input", FloatTensorType([None, 4]))], options={id(clf): {"zipmap": False}})
    path = save(model, folder)
    sess = session(path)
    outputs = sess.get_outputs()
    string_outputs = [o.name for o in outputs if o.type == "tensor(string)"]
    assert len(string_outputs) == 1, signature(sess)
    (label,) = sess.run(string_outputs, {"input": x[[0, 120]]})
    assert label.tolist() == ["setosa", "virginica"], label
    (folder / "case.json").write_text(json.dumps({"refused_output": string_outputs[0]}, indent=1) + "\n")
    print(f"{folder.name}: {signature(sess)}")


CASES = [zipmap, lightgbm, external, boolfp16, strings, strlabels]


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".build/exported")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for case in CASES:
        case(tmp / case.__name__)
    for folder in tmp.iterdir():
        onnx_files = sorted(p.name for p in folder.glob("*.onnx"))
        assert onnx_files == ["model.onnx"], (folder, onnx_files)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


if __name__ == "__main__":
    main()
