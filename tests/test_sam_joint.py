"""SAM decoding of all prompts in one pass, the union only where asked, and embeddings
precomputed once before training."""

import json

import pytest
import torch
from conftest import tiny_config

from medcl.errors import ConfigError
from medcl.models import build_model
from medcl.models.sam import build_sam_tiny
from medcl.models.sam.embedding_store import EmbeddingCache
from medcl.training.config import TrainConfig
from medcl.training.data import load_training_data
from medcl.training.embeddings import same_shape_batches
from medcl.training.trainer import Trainer

N_FG = 3  # foreground classes of the 4-class tiny segmenters


def _tiny(decode_mode="joint", **kw):
    torch.manual_seed(0)
    return build_model("sam_tiny", in_channels=1, num_classes=N_FG + 1, checkpoint=None,
                       decode_mode=decode_mode, **kw).eval()


def test_one_group_is_exactly_the_single_prompt_pass():
    torch.manual_seed(0)
    sam = build_sam_tiny().eval()
    emb = torch.randn(2, 32, 16, 16)
    prompt = torch.randn(1, 2, 32)
    single, _ = sam.predict_masks(emb, sparse_embeddings=prompt.expand(2, -1, -1))
    grouped = sam.predict_mask_groups(emb, prompt[None])
    assert grouped.shape == (2, 1, 64, 64)
    torch.testing.assert_close(grouped, single, rtol=1e-5, atol=1e-5)


def test_groups_meet_only_through_the_image_and_the_passive_group_not_at_all():
    torch.manual_seed(0)
    sam = build_sam_tiny().eval()
    emb = torch.randn(1, 32, 16, 16)
    prompts = torch.randn(1, 3, 2, 32)
    base = sam.predict_mask_groups(emb, prompts, passive_groups=1)
    changed_passive = prompts.clone()
    changed_passive[:, 2] += 1.0
    other = sam.predict_mask_groups(emb, changed_passive, passive_groups=1)
    torch.testing.assert_close(other[:, :2], base[:, :2])  # passive: read by no one
    assert not torch.allclose(other[:, 2], base[:, 2])
    changed_active = prompts.clone()
    changed_active[:, 1] += 1.0
    moved = sam.predict_mask_groups(emb, changed_active, passive_groups=1)
    assert not torch.allclose(moved[:, 0], base[:, 0])  # active groups share the image
    with pytest.raises(ValueError, match=r"passive_groups must be in \[0, 3\)"):
        sam.predict_mask_groups(emb, prompts, passive_groups=3)


@pytest.mark.parametrize("mode", ["joint", "per_prompt"])
def test_union_decoded_only_for_the_inputs_that_ask(mode):
    model = _tiny(mode)
    calls = []
    for name in ("predict_mask_groups", "predict_masks"):
        original = getattr(model.sam, name)

        def spy(emb, *args, _f=original, **kw):
            out = _f(emb, *args, **kw)
            masks = out[0] if isinstance(out, tuple) else out
            calls.append(masks.shape[0] * masks.shape[1])  # masks decoded
            return out
        setattr(model.sam, name, spy)
    emb = torch.randn(4, 32, 16, 16)
    logits = model(emb, stage="decode", size=(64, 64))
    assert calls == [4 * N_FG]  # inference: the classes only, never the union
    calls.clear()
    both, union = model(emb, stage="decode", size=(64, 64), return_union=2)
    assert union.shape == (2, 1, 64, 64) and sum(calls) == 4 * N_FG + 2
    if mode == "joint":  # the union group is passive: class logits do not change
        torch.testing.assert_close(both, logits)
    _, union_all = model(emb, stage="decode", size=(64, 64), return_union=True)
    torch.testing.assert_close(union_all[:2], union)


def test_modes_agree_on_shapes_and_checks():
    joint, per_prompt = _tiny("joint"), _tiny("per_prompt")
    per_prompt.load_state_dict(joint.state_dict())
    x = torch.randn(2, 1, 40, 30)
    a, b = joint(x), per_prompt(x)
    assert a.shape == b.shape == (2, N_FG + 1, 40, 30)
    assert torch.equal(a[:, 0], torch.zeros(2, 40, 30))
    with pytest.raises(ConfigError, match="joint, per_prompt"):
        _tiny("together")
    with pytest.raises(ConfigError, match="sam_decode='x' is not valid"):
        TrainConfig(data="d", sam_decode="x")


def test_three_input_channels_go_to_the_three_encoder_channels():
    torch.manual_seed(0)
    model = build_model("sam_tiny", in_channels=3, num_classes=3, checkpoint=None).eval()
    x = torch.rand(2, 3, 64, 64)
    prepared, size = model.prepare(x)
    assert size == (64, 64) and prepared.shape == (2, 3, 64, 64)
    # one min-max per slice over all three channels, channel order kept
    torch.testing.assert_close(prepared, (x - x.amin((1, 2, 3), keepdim=True))
                               / (x.amax((1, 2, 3), keepdim=True)
                                  - x.amin((1, 2, 3), keepdim=True)))
    assert model(x).shape == (2, 3, 64, 64)


def test_pinned_embeddings_survive_eviction():
    cache = EmbeddingCache(1)
    calls = []

    def encode(x):
        calls.append(len(x))
        return x[:, :1, :2, :2] * 2
    a, b, c = (torch.full((1, 3, 4, 4), float(v)) for v in (1, 2, 3))
    assert cache.pin(torch.cat([a, b]), encode) == 2
    assert cache.pin(torch.cat([b, a]), encode) == 0  # already there: nothing computed
    cache.lookup(c, encode)
    cache.lookup(torch.cat([c, c]), encode)  # c is recent; a second recent entry evicts it
    cache.lookup(torch.full((1, 3, 4, 4), 4.0), encode)
    out = cache.lookup(torch.cat([a, b]), encode)
    assert calls == [2, 1, 1] and cache.hits == 4
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([2.0, 4.0]))
    assert len(cache) == 3 and cache.nbytes == 3 * 1 * 2 * 2 * 2  # bf16: 2 bytes each


def test_same_shape_batches_split_at_size_and_shape():
    s = [torch.zeros(1, 4, 4)] * 3 + [torch.zeros(1, 5, 4)]
    assert [tuple(b.shape) for b in same_shape_batches(s, 2)] == [
        (2, 1, 4, 4), (1, 1, 4, 4), (1, 1, 5, 4)]


@pytest.mark.parametrize("crop_size", [64, 48, 80])  # whole 64 px slices; cropped; padded
def test_training_inputs_all_come_from_the_precomputed_store(tiny_dataset, tmp_path, crop_size):
    """bf16 and a centre crop: every training and validation input hits the precomputed
    embeddings (the keys match what the step and validation feed), and the run logs the store."""
    cfg = tiny_config(tiny_dataset, model="sam_tiny", sam_checkpoint="none", crop_size=crop_size,
                      crop_mode="center", rotate_degrees=0.0, scale_min=1.0, scale_max=1.0,
                      flip_prob=0.0, rot90=False, widths=None, method="medcl", head_grid=4,
                      head_hidden=16, code_dim=8, num_scribbled=2, iterations=2,
                      val_interval=2, precision="bf16")
    data, cfg = load_training_data(cfg)
    trainer = Trainer(cfg, data, tmp_path / "run")
    trainer.run()
    cache = trainer.model.cache
    record = next(json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()
                  if json.loads(x)["event"] == "embeddings")
    n_val = sum(c.image.shape[0] for c in data.val)
    assert record["train_slices"] == len(trainer.sampler.drawable())
    assert record["val_slices"] == n_val
    assert cache.misses == 0 and cache.hits > 0
    assert len(cache.pinned) == record["computed"] > 0
    assert record["store_mib"] == pytest.approx(cache.nbytes / 2 ** 20, abs=0.05)


def test_recomputed_decoder_gives_the_same_logits_and_gradients():
    kept, recomputed = _tiny(), _tiny(recompute=True)
    recomputed.load_state_dict(kept.state_dict())
    emb = torch.randn(5, 32, 16, 16)  # 5 inputs: chunks of 4 and 1
    grads = []
    for model in (kept, recomputed):
        model.train()
        logits, union = model(emb, stage="decode", size=(64, 64), return_union=3)
        (logits.square().mean() + union.mean()).backward()
        grads.append((logits.detach(), model.prompts.grad.clone(),
                      model.sam.mask_decoder.iou_token.weight.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
