"""Write tests/fixtures/torch/: a tiny module exported by torch.onnx.export.

Not run by make: torch is a 540 MB wheel that pulls ~3 GB of CUDA packages,
so the result (a few KB) is committed instead. Made with torch 2.15.0 and
onnxscript 0.7.2 in a venv of its own beside scripts/requirements.txt:

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install -r scripts/requirements.txt torch==2.15.0 onnxscript==0.7.2
    /tmp/torchvenv/bin/python scripts/make_torch_fixture.py

It uses torch's default exporter (dynamo=True, as users now get it) with a
dynamic batch dimension, opset 18, and external_data=False so the weights
stay inside the single model.onnx (the default would write model.onnx.data).
case.json holds a 3-row sample and onnxruntime's answer to it, in the format
of scripts/make_exported.py.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parent.parent
SEED = 7


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 3)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (the ONNX input's name)
        return self.fc2(torch.relu(self.fc1(input)))


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests/fixtures/torch"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    for stale in out.glob("model.onnx*"):
        stale.unlink()

    torch.manual_seed(SEED)
    module = Tiny().eval()
    example = torch.randn(2, 8)
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_shapes={"input": {0: torch.export.Dim("batch")}},
        opset_version=18,
        external_data=False,
    )
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("model")) == ["model.onnx"], list(out.iterdir())
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, outp.name, outp.type) == ("input", "tensor(float)", "output", "tensor(float)")
    assert isinstance(inp.shape[0], str) and inp.shape[1] == 8, inp.shape
    assert isinstance(outp.shape[0], str) and outp.shape[1] == 3, outp.shape
    rng = np.random.default_rng(SEED)
    for batch in (1, 3, 5):
        x = rng.standard_normal((batch, 8)).astype(np.float32)
        (got,) = sess.run(["output"], {"input": x})
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        assert got.shape == (batch, 3), got.shape
        assert np.allclose(got, want, rtol=1e-5, atol=1e-6), (got, want)
    sample = np.round(rng.standard_normal((3, 8)), 3).astype(np.float32)
    (answer,) = sess.run(["output"], {"input": sample})

    def tensor(name: str, value: np.ndarray) -> dict:
        return {"name": name, "datatype": "FP32", "shape": list(value.shape), "data": value.reshape(-1).tolist()}

    case = {"inputs": [tensor("input", sample)], "outputs": [tensor("output", answer)]}
    (out / "case.json").write_text(json.dumps(case, indent=1) + "\n")
    print(
        f"torch {torch.__version__}: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
        f"{path.stat().st_size} bytes, opset {model.opset_import[0].version}, IR {model.ir_version}; "
        f"in {inp.name} {inp.type} {inp.shape}, out {outp.name} {outp.type} {outp.shape}"
    )


if __name__ == "__main__":
    main()
