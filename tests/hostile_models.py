"""Writes hostile ONNX artifact folders for testing Nimbus's model checks.

Usage: python hostile_models.py OUT_DIR

Each case is a folder OUT_DIR/<case>/ holding `model.onnx` (plus side files),
laid out as a function's artifact folder. Re-running replaces the folders.

Refused by the host's checker (host/src/nn/check.rs):
  ext-abs            initializer whose external data is at `/etc/passwd`
  ext-dotdot         initializer whose external data is at `../../admin-token`
  ext-symlink        initializer in `weights.bin`, a symlink to /etc/passwd
  ext-memaddr        initializer at ORT's `*/_ORT_MEM_ADDR_/*` tag (offset 4096 = a raw pointer)
  ext-constant       Constant node whose `value` tensor is external at `/etc/passwd`
  ext-subgraph       the same Constant inside the `then_branch` of an If
  ext-sparse         sparse initializer whose `values` tensor is external at `/etc/passwd`
  custom-op          a node in domain `evil.custom`
Accepted by the checker, to be contained at run time (deadlines, memory accounting):
  constant-of-shape  ~110-byte model: ConstantOfShape(shape); shape [10**10] asks for 40 GB
  loop-forever       Loop with trip count 2**50 over a trivial Add
  many-nodes         a chain of 200,000 Add nodes (a few MB)
  many-graphs        1,500 tiny Identity models g0000.onnx .. g1499.onnx in one folder (no model.onnx)
  good-external      legit model whose initializer lives in `weights.bin` next to it
"""

import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 21)]
IR_VERSION = 10  # not onnx 1.23's default 14 (ONNX Runtime 1.32 reads it), so older runtimes can load them too


def model(nodes, inputs, outputs, initializers=(), sparse=(), opsets=OPSET, name="g"):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers))
    graph.sparse_initializer.extend(sparse)
    return helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION)


def vec(name, n, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, [n])


def external(name, location, values=np.ones(4, np.float32), offset=None, length=None):
    """A tensor of `values`' type and shape whose data is said to be at `location`."""
    t = numpy_helper.from_array(values, name)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entries = [("location", location)]
    entries += [(k, str(v)) for k, v in (("offset", offset), ("length", length)) if v is not None]
    for key, value in entries:
        t.external_data.add(key=key, value=value)
    return t


def add_model(w):
    """y = x + W for x float[n], W an initializer."""
    n = int(np.prod(w.dims))
    return model([helper.make_node("Add", ["x", w.name], ["y"])], [vec("x", n)], [vec("y", n)], [w])


def constant_model(value):
    """y = x + c, c a Constant node holding `value` (float[4])."""
    nodes = [helper.make_node("Constant", [], ["c"], name="c", value=value), helper.make_node("Add", ["x", "c"], ["y"])]
    return model(nodes, [vec("x", 4)], [vec("y", 4)])


def if_model(then_value):
    """y = If(cond) then (Constant then_value) else (zeros), float[4]."""

    def branch(name, value):
        return helper.make_graph([helper.make_node("Constant", [], [name], value=value)], name, [], [vec(name, 4)])

    zeros = numpy_helper.from_array(np.zeros(4, np.float32), "z")
    node = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=branch("then", then_value),
                            else_branch=branch("else", zeros))
    return model([node], [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])], [vec("y", 4)])


def sparse_model(values):
    """y = x + S, S a sparse initializer float[4] with 2 stored values."""
    indices = numpy_helper.from_array(np.array([0, 2], np.int64), "S_indices")
    s = helper.make_sparse_tensor(values, indices, [4])
    return model([helper.make_node("Add", ["x", "S"], ["y"])], [vec("x", 4)], [vec("y", 4)], sparse=[s])


def constant_of_shape():
    one = numpy_helper.from_array(np.ones(1, np.float32), "")
    node = helper.make_node("ConstantOfShape", ["shape"], ["out"], value=one)
    return model([node], [vec("shape", 1, TensorProto.INT64)], [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n"])])


def loop_forever():
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.ones(1, np.float32))),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
        ],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), vec("acc_in", 1)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), vec("acc_out", 1)],
    )
    trips = numpy_helper.from_array(np.array(2**50, np.int64), "trips")
    yes = numpy_helper.from_array(np.array(True), "yes")
    node = helper.make_node("Loop", ["trips", "yes", "x"], ["y"], name="loop", body=body)
    return model([node], [vec("x", 1)], [vec("y", 1)], [trips, yes])


def many_nodes(n=200_000):
    one = numpy_helper.from_array(np.ones(1, np.float32), "one")
    names = ["x"] + [f"t{i}" for i in range(1, n)] + ["y"]
    nodes = [helper.make_node("Add", [names[i], "one"], [names[i + 1]]) for i in range(n)]
    return model(nodes, [vec("x", 1)], [vec("y", 1)], [one])


def identity():
    return model([helper.make_node("Identity", ["x"], ["y"])], [vec("x", 1)], [vec("y", 1)])


def save(m, folder, name="model.onnx"):
    with open(os.path.join(folder, name), "wb") as f:
        f.write(m.SerializeToString())  # onnx.save_model would try to write external data


def check(m):
    onnx.checker.check_model(m, full_check=True)
    return m


def symlinked(folder):
    os.symlink("/etc/passwd", os.path.join(folder, "weights.bin"))
    return add_model(external("W", "weights.bin", offset=0, length=16))


def good_external(folder):
    WEIGHTS.tofile(os.path.join(folder, "weights.bin"))
    return add_model(external("W", "weights.bin", WEIGHTS, 0, 16))


def many_graphs(folder):
    data = check(identity()).SerializeToString()
    for i in range(1500):
        with open(os.path.join(folder, f"g{i:04}.onnx"), "wb") as f:
            f.write(data)


WEIGHTS = np.arange(4, dtype=np.float32)
PASSWD = dict(location="/etc/passwd", offset=0, length=16)

# onnx.checker refuses every ext-* model (absolute, outside the folder, not a regular file), so
# those are saved unchecked; it passes the custom op (unknown domains are not its business).
CASES = {
    "ext-abs": lambda d: add_model(external("W", **PASSWD)),
    "ext-dotdot": lambda d: add_model(external("W", "../../admin-token", offset=0, length=16)),
    "ext-symlink": symlinked,
    "ext-memaddr": lambda d: add_model(external("W", "*/_ORT_MEM_ADDR_/*", np.ones(2, np.float32), 4096, 8)),
    "ext-constant": lambda d: constant_model(external("c", **PASSWD)),
    "ext-subgraph": lambda d: if_model(external("c", **PASSWD)),
    "ext-sparse": lambda d: sparse_model(external("S", "/etc/passwd", np.ones(2, np.float32), 0, 8)),
    "custom-op": lambda d: check(model([helper.make_node("EvilOp", ["x"], ["y"], domain="evil.custom")], [vec("x", 1)],
                                       [vec("y", 1)], opsets=OPSET + [helper.make_opsetid("evil.custom", 1)])),
    "constant-of-shape": lambda d: check(constant_of_shape()),
    "loop-forever": lambda d: check(loop_forever()),
    "many-nodes": lambda d: check(many_nodes()),
    "many-graphs": many_graphs,
    "good-external": good_external,  # checked by path below, which also reads weights.bin
}


def main(out):
    for case, make in CASES.items():
        folder = os.path.join(out, case)
        if os.path.lexists(folder):
            shutil.rmtree(folder)
        os.makedirs(folder)
        m = make(folder)
        if m is not None:
            save(m, folder)
    good = os.path.join(out, "good-external", "model.onnx")
    onnx.checker.check_model(good)
    run_good_external(good)


def run_good_external(path):
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: good-external not run", file=sys.stderr)
        return
    x = np.array([10, 20, 30, 40], np.float32)
    (y,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert np.array_equal(y, x + WEIGHTS), y


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
