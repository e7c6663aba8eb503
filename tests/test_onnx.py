"""``medcl export RUN model.onnx``: the UNet in onnxruntime gives torch's logits (max abs
difference below ``ATOL``; 3e-6 measured, docs/share.md) and the same argmax on real
preprocessed slices of two sizes and batch sizes; the SAM family is refused in one line."""

import json

import numpy as np
import pytest
import torch
from conftest import one_line_error

from medcl.cli import main
from medcl.data.dicom import load_case_image
from medcl.data.labels import LabelSpec
from medcl.data.preprocessing import image_to_slices, pad_to_multiple, run_preprocessing
from medcl.errors import ConfigError
from medcl.models import build_model, rebuild_model
from medcl.models.onnx import INPUT_NAME, export_onnx
from medcl.runtime.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from medcl.training.export import ONNX_SIDECAR_FORMAT, sidecar_path

#: float32 logits of two runtimes differ by rounding only; argmax is compared exactly
ATOL = 1e-4


@pytest.fixture(scope="module")
def onnx_export(trained_run, tmp_path_factory):
    for module in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(module, reason=f"ONNX export tests need {module}: "
                            "pip install 'medcl[onnx]'")
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", str(trained_run), str(out)]) == 0
    return out


def test_onnx_logits_match_torch(onnx_export, trained_run, tiny_dataset):
    import onnxruntime

    state = load_checkpoint(checkpoint_path(trained_run, "best"))
    spec = LabelSpec.from_dict(state["label_spec"])
    model = rebuild_model(state["model_kwargs"], state["model"], source="best").eval()
    session = onnxruntime.InferenceSession(str(onnx_export), providers=["CPUExecutionProvider"])
    image = load_case_image([next((tiny_dataset / "TestSet" / "images").iterdir())])
    slices = image_to_slices(image.data, image.spacing[:2], run_preprocessing(
        state["config"], spec))
    padded, _ = pad_to_multiple(slices, model.size_divisor)
    # two batch sizes and two slice sizes: the exported shapes are dynamic
    for batch in (padded[:1], padded[:, :, : padded.shape[2] // 2]):
        with torch.no_grad():
            expected = model(batch).numpy()
        got = session.run(None, {INPUT_NAME: batch.numpy()})[0]
        assert got.shape == expected.shape
        print(f"ONNX vs torch: batch {tuple(batch.shape)}, max abs logit difference "
              f"{np.abs(got - expected).max():.3g}")
        assert np.abs(got - expected).max() < ATOL, np.abs(got - expected).max()
        np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
    sidecar = json.loads(sidecar_path(onnx_export).read_text())
    assert sidecar["format"] == ONNX_SIDECAR_FORMAT
    assert sidecar["input"]["shape"] == ["B", 1, "H", "W"]
    assert sidecar["preprocessing"]["size_divisor"] == model.size_divisor
    assert sidecar["preprocessing"]["target_spacing_mm"] == state["config"]["target_spacing"]


def test_the_sam_family_is_refused_in_one_line(tmp_path, capsys):
    spec = LabelSpec(class_names=("background", "organ"), label_values=(0, 1))
    kwargs = {"name": "sam_tiny", "in_channels": 1, "num_classes": 2, "checkpoint": None}
    model = build_model(**kwargs)
    with pytest.raises(ConfigError, match="SAM family"):
        export_onnx(model, tmp_path / "direct.onnx", in_channels=1)
    path = tmp_path / "sam.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": {"crop_size": 64},
                           "label_spec": spec.to_dict(), "model_kwargs": kwargs})
    assert main(["export", str(path), str(tmp_path / "sam.onnx")]) == 2
    one_line_error(capsys, str(path), "cannot be exported to ONNX", ".medcl")
    assert not list(tmp_path.glob("sam.onnx*"))
