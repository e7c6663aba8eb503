"""SamSegmenter: learned class prompts, encoder modes, the embedding cache, SAM in training."""

import json

import pytest
import torch
from conftest import tiny_config

from medcl.errors import ConfigError
from medcl.inference.predictor import Predictor
from medcl.method.mixing import IntraImageMix
from medcl.models import build_model
from medcl.models.sam.segmenter import EmbeddingCache
from medcl.runtime.precision import FastForward
from medcl.training.components import build_objective
from medcl.training.config import TrainConfig
from medcl.training.run import train


def _tiny(**kw):
    kw.setdefault("encoder", "frozen")
    return build_model("sam_tiny", in_channels=1, num_classes=4, checkpoint=None, **kw)


def test_logits_shape_background_zero_and_union():
    model = _tiny()
    x = torch.randn(2, 1, 40, 30)  # any size, not square
    logits, union = model(x, return_union=True)
    assert logits.shape == (2, 4, 40, 30) and union.shape == (2, 1, 40, 30)
    assert torch.equal(logits[:, 0], torch.zeros(2, 40, 30))


def test_stages_compose_to_the_full_forward():
    model = _tiny().eval()
    x = torch.randn(3, 1, 48, 48)
    emb = model(x, stage="encode")
    assert emb.shape[:2] == (3, 32)
    torch.testing.assert_close(model(emb, stage="decode", size=(48, 48)), model(x))
    with pytest.raises(ValueError, match="size"):
        model(emb, stage="decode")
    with pytest.raises(ValueError, match="valid: full, encode, decode"):
        model(x, stage="nope")


def test_frozen_encoder_caches_and_trains_only_prompts_and_decoder():
    model = _tiny(encoder="frozen")
    x = torch.randn(2, 1, 64, 64)
    model(x)
    assert (model.cache.hits, model.cache.misses, len(model.cache)) == (0, 2, 2)
    model(torch.cat([x[:1], torch.randn(1, 1, 64, 64)]))
    assert (model.cache.hits, model.cache.misses) == (1, 3)
    model(x).sum().backward()
    enc = model.sam.image_encoder
    assert all(p.grad is None for p in enc.parameters())
    assert model.prompts.grad is not None and model.prompts.grad.abs().sum() > 0
    model.train()
    assert not enc.training  # frozen: eval mode even while training


def test_precomputing_leaves_the_frozen_encoders_batchnorm_statistics_alone():
    # a new segmenter used to start with its encoder in training mode: precomputed embeddings
    # were normalised by the statistics of each batch of 4 slices, and every batch moved the
    # pretrained running statistics that prediction then used
    model = _tiny(encoder="frozen")
    enc = model.sam.image_encoder
    assert not enc.training
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    model.precompute(torch.randn(4, 1, 64, 64) * 3 + 1)
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())


def test_cached_and_uncached_frozen_encoders_give_the_same_logits():
    # training validates through the cache (pinned bf16 embeddings); prediction has no cache
    torch.manual_seed(0)
    cached = _tiny(encoder="frozen")
    uncached = _tiny(encoder="frozen", cache_size=0)
    uncached.load_state_dict(cached.state_dict())
    x = torch.randn(3, 1, 64, 64)
    cached.precompute(x)
    cached.eval(), uncached.eval()
    assert torch.equal(cached(x), uncached(x))
    assert cached.cache.hits == 3


def test_cached_and_uncached_embeddings_decode_alike_in_bf16_channels_last():
    # the runs' configuration (bf16 autocast, channels-last): the uncached embeddings came out
    # channels-last, the cached ones contiguous, and the bf16 decoder rounded the two layouts
    # differently (MyoPS MedCL-SAM: 0.098 in training validation, 0.053 through predict)
    torch.manual_seed(0)
    cached = _tiny(encoder="frozen")
    uncached = _tiny(encoder="frozen", cache_size=0)
    uncached.load_state_dict(cached.state_dict())
    fast = [FastForward(m.eval(), precision="bf16", channels_last=True)
            for m in (cached, uncached)]
    x = torch.randn(3, 1, 64, 64)
    emb = [f(x, stage="encode") for f in fast]
    assert torch.equal(emb[0], emb[1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        raw = [m.encode(x.contiguous(memory_format=torch.channels_last))
               for m in (cached, uncached)]
    assert all(e.is_contiguous() for e in raw)  # one layout whichever path made them
    # (this tiny decoder rounds both layouts alike, so the layout check above is the one that
    # failed before the fix; LiteMedSAM's decoder did not)
    assert torch.equal(fast[0](x), fast[1](x))


def test_encoder_runs_in_chunks_with_the_same_embeddings(monkeypatch):
    model = _tiny(encoder="frozen", cache_size=0).eval()
    x = torch.randn(9, 1, 64, 64)
    whole = model.sam.encode_images(model.prepare(x)[0])
    calls = []
    encode_images = model.sam.encode_images
    monkeypatch.setattr(model.sam, "encode_images",
                        lambda images: calls.append(len(images)) or encode_images(images))
    # a frozen encoder's embeddings are rounded to the store's bf16, cached or not
    # (chunking changes the last float bits, which can move a value by one bf16 step)
    torch.testing.assert_close(model(x, stage="encode"), whole, rtol=2 ** -7, atol=1e-6)
    assert calls == [4, 4, 1]  # ENCODE_CHUNK at a time
    full = _tiny(encoder="full").train()  # BatchNorm on batch statistics: one call
    full_encode_images = full.sam.encode_images
    monkeypatch.setattr(full.sam, "encode_images",
                        lambda images: calls.append(len(images)) or full_encode_images(images))
    full(x, stage="encode")
    assert calls[-1] == 9


def test_partial_and_full_encoder_modes():
    partial, full = _tiny(encoder="partial"), _tiny(encoder="full")
    assert partial.cache is None and full.cache is None
    n_partial = sum(p.requires_grad for p in partial.sam.image_encoder.parameters())
    n_full = sum(p.requires_grad for p in full.sam.image_encoder.parameters())
    n_all = len(list(full.sam.image_encoder.parameters()))
    assert 0 < n_partial < n_full == n_all
    partial(torch.randn(2, 1, 64, 64)).sum().backward()
    assert partial.sam.image_encoder.neck[0].weight.grad is not None
    assert partial.sam.image_encoder.patch_embed.seq[0].c.weight.grad is None


def test_cache_is_bounded_and_returns_the_same_value():
    cache = EmbeddingCache(2)
    calls = []

    def encode(x):
        calls.append(len(x))
        return x[:, :1, :2, :2] * 2
    a, b, c = (torch.full((1, 3, 4, 4), float(v)) for v in (1, 2, 3))
    first = cache.lookup(torch.cat([a, b]), encode)
    again = cache.lookup(torch.cat([b, a]), encode)
    assert calls == [2] and torch.equal(first.flip(0), again)
    cache.lookup(c, encode)  # evicts a
    assert len(cache) == 2
    cache.lookup(a, encode)
    assert calls == [2, 1, 1]
    with pytest.raises(ConfigError, match="cache size must be >= 0, got -1"):
        EmbeddingCache(-1)


def test_bad_options_name_the_choices():
    with pytest.raises(ConfigError, match="frozen, partial, full"):
        _tiny(encoder="thawed")
    with pytest.raises(ConfigError, match="1 or 3"):
        build_model("sam_tiny", in_channels=2, num_classes=3, checkpoint=None)
    model = _tiny(union_prompt=False)
    with pytest.raises(ConfigError, match="union_prompt"):
        model(torch.randn(1, 1, 64, 64), return_union=True)


def test_intra_mix_of_embeddings_turns_targets_alike():
    """Feature maps on a 4x coarser grid rotate like their targets, and the kept box scales."""
    mix = IntraImageMix(max_angle=0.0, box="random", box_min=0.5, box_max=0.5)
    feats = torch.arange(16.0).view(1, 1, 4, 4).repeat(1, 2, 1, 1)
    targets = torch.zeros(1, 3, 16, 16)
    targets[:, 1] = 1.0
    views = mix(feats, targets, generator=torch.Generator().manual_seed(0))
    assert views.image.shape == (2, 2, 4, 4) and views.targets.shape == (2, 3, 16, 16)
    # no rotation: the blend of two identical copies is the copy itself, inside and outside
    torch.testing.assert_close(views.image, feats.repeat(2, 1, 1, 1))
    with pytest.raises(ValueError, match="aspect"):
        mix(torch.zeros(1, 1, 4, 8), targets, generator=torch.Generator())


def _sam_cfg(data, **kw):
    base = dict(model="sam_tiny", sam_checkpoint="none", crop_size=64, crop_mode="center",
                rotate_degrees=0.0, scale_min=1.0, scale_max=1.0, flip_prob=0.0, rot90=False,
                widths=None, head_grid=4, head_hidden=16, code_dim=8)
    base.update(kw)
    return tiny_config(data, **base)


def test_prompt_consistency_terms_reach_the_prompts():
    cfg = TrainConfig(data="x", model="sam_tiny", method="medcl", crop_size=64, head_grid=4,
                      head_hidden=16, code_dim=8, **{f"{t}_weight": 0.0 for t in (
                          "pce", "dice", "mix_pce", "mix_consistency", "existence", "global",
                          "local")}, prompt_consistency_weight=1.0)
    model = build_model("sam_tiny", in_channels=1, num_classes=4, checkpoint=None,
                        union_prompt=True)
    objective = build_objective(cfg, num_classes=4, ignore_index=4)
    assert objective.mix_space == "embedding" and objective.use_union
    labels = torch.full((2, 64, 64), 4)
    labels[:, 20:30, 20:30] = 1
    labels[:, :4] = 0
    batch = {"image": torch.randn(2, 1, 64, 64), "labels": labels,
             "tags": torch.ones(2, 4, dtype=torch.bool)}
    loss, terms = objective(model, batch, torch.Generator().manual_seed(0))
    assert {"prompt_consistency", "union_pce"} <= set(terms)
    # union_pce follows pce_weight (0 here): the consistency is the only weighted term
    assert terms["prompt_consistency"] == pytest.approx(loss.item())
    loss.backward()
    assert model.prompts.grad[-1].abs().sum() > 0  # the union prompt learns


def test_embedding_mix_needs_a_sam_model():
    cfg = TrainConfig(data="x", method="medcl", mix_space="embedding")
    with pytest.raises(ConfigError, match="SAM model"):
        build_objective(cfg, num_classes=4, ignore_index=4)


@pytest.mark.parametrize("method,encoder", [("pce", "frozen"), ("medcl", "frozen"),
                                            ("medcl", "partial")])
def test_sam_trains_and_predicts(tiny_dataset, tmp_path, method, encoder):
    """Frozen: cached embeddings mixed in embedding space; partial: images mixed and encoded."""
    cfg = _sam_cfg(tiny_dataset, method=method, num_scribbled=2, iterations=4, val_interval=2,
                   sam_encoder=encoder)
    run = tmp_path / "run"
    train(cfg, run)
    records = [json.loads(x) for x in (run / "metrics.jsonl").open()]
    steps = [r for r in records if r["event"] == "step"]
    assert len(steps) == 4 and all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    if method == "medcl":
        assert {"prompt_consistency", "union_pce", "global", "local"} <= set(steps[0])
    predictor = Predictor.from_run(run, device="cpu")
    assert predictor.model.model.cache is None  # prediction sees each slice once
    probs = predictor.predict_slices(torch.randn(3, 1, 50, 70))
    assert probs.shape == (3, 4, 50, 70)
    torch.testing.assert_close(probs.sum(1), torch.ones(3, 50, 70))
