"""The MedCL objective: every term reaches the network, presets, determinism, a short run."""

import json
import math

import pytest
import torch
from conftest import tiny_config

from medcl.errors import ConfigError
from medcl.method.losses import existence_loss
from medcl.method.objectives import slice_tags
from medcl.models import build_model
from medcl.training.components import build_objective
from medcl.training.config import METHOD_PRESETS, TrainConfig
from medcl.training.run import train
from medcl.training.schedule import sigmoid_rampup

TERMS = ("pce", "dice", "mix_pce", "mix_consistency", "existence", "global", "local")


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.full((4, 32, 32), 4)
    labels[:, 10:14, 10:20] = 3
    labels[:, 2:4, :] = 0
    labels[:, 20:22, 5:25] = 1
    labels[3] = 4  # an unscribbled slice
    tags = torch.tensor([[1, 1, 0, 1]] * 4, dtype=torch.bool)
    return {"image": torch.randn(4, 1, 32, 32, generator=gen), "labels": labels, "tags": tags}


@pytest.mark.parametrize("term", TERMS)
def test_every_term_sends_gradient_to_the_network(term):
    weights = {f"{t}_weight": (1.0 if t == term else 0.0) for t in TERMS}
    cfg = TrainConfig(method="medcl", crop_size=32, head_grid=4, head_hidden=16, code_dim=8,
                      **weights)
    objective = build_objective(cfg, num_classes=4, ignore_index=4)
    model = build_model("unet", in_channels=1, num_classes=4, widths=[4, 8])
    batch = _batch()
    if term == "existence":
        batch["tags"][:, 2] = False
        batch["tags"][:, 1] = False
    loss, terms = objective(model, batch, torch.Generator().manual_seed(0))
    loss.backward()
    grad = sum(p.grad.abs().sum() for p in model.parameters() if p.grad is not None)
    assert loss.item() > 0 and grad > 0, terms
    assert set(terms) >= {term if term != "dice" else "dice", "loss"}


def test_presets_switch_terms():
    assert TrainConfig(method="pce").mix_pce_weight == 0
    cluster = TrainConfig(method="cluster")
    assert cluster.global_weight == 1 and cluster.mix_pce_weight == 0 and not cluster.intra_mix
    medcl = TrainConfig(method="medcl", existence_weight=0.3)
    assert medcl.existence_weight == 0.3 and medcl.intra_mix
    assert set(METHOD_PRESETS) == {"pce", "mix", "cluster", "mix_cluster", "medcl",
                                   "recommended"}


def test_objective_is_deterministic_under_a_seed():
    cfg = TrainConfig(method="medcl", crop_size=32, head_grid=4, head_hidden=16, code_dim=8)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        objective = build_objective(cfg, num_classes=4, ignore_index=4)
        model = build_model("unet", in_channels=1, num_classes=4, widths=[4, 8])
        loss, _ = objective(model, _batch(), torch.Generator().manual_seed(5))
        results.append(loss.item())
    assert results[0] == results[1]


def test_any_batch_and_image_size():
    cfg = TrainConfig(method="medcl", crop_size=48, head_grid=4, head_hidden=16, code_dim=8)
    objective = build_objective(cfg, num_classes=4, ignore_index=4)
    model = build_model("unet", in_channels=1, num_classes=4, widths=[4, 8])
    for batch_size, size in ((1, 16), (3, 48), (5, 24)):
        batch = {"image": torch.randn(batch_size, 1, size, size),
                 "labels": torch.randint(0, 5, (batch_size, size, size)),
                 "tags": torch.ones(batch_size, 4, dtype=torch.bool)}
        loss, _ = objective(model, batch, torch.Generator().manual_seed(0))
        assert torch.isfinite(loss)


def test_short_medcl_run_decreases_its_loss(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, method="medcl", num_scribbled=2, iterations=40,
                      val_interval=0, lr=3e-3, warmup_steps=0, lr_schedule="constant",
                      head_grid=4, head_hidden=32, code_dim=16, crop_size=48)
    train(cfg, tmp_path / "run")
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    losses = [r["loss"] for r in records if r["event"] == "step"]
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.9 * first, (first, last)


def test_supervised_only_step_is_the_scribble_loss():
    cfg = TrainConfig(method="medcl", crop_size=32, head_grid=4, head_hidden=16, code_dim=8,
                      dice_weight=0.5)
    objective = build_objective(cfg, num_classes=4, ignore_index=4)
    objective.supervised_only = True
    reference = build_objective(TrainConfig(method="pce", dice_weight=0.5), num_classes=4,
                                ignore_index=4)
    model = build_model("unet", in_channels=1, num_classes=4, widths=[4, 8])
    loss, terms = objective(model, _batch(), torch.Generator().manual_seed(0))
    expected, _ = reference(model, _batch(), torch.Generator().manual_seed(0))
    assert set(terms) == {"pce", "dice", "loss"}
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_supervised_warmup_switches_medcl_terms_on(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, method="medcl", num_scribbled=2, iterations=12,
                      val_interval=0, log_interval=1, supervised_warmup=0.5,
                      head_grid=4, head_hidden=16, code_dim=8, crop_size=32)
    train(cfg, tmp_path / "run")
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    steps = [r for r in records if r["event"] == "step"]
    assert [("global" in r) for r in steps] == [False] * 6 + [True] * 6
    with pytest.raises(ConfigError, match=r"supervised_warmup must be in \[0, 1\), got 1.0"):
        TrainConfig(method="medcl", supervised_warmup=1.0)


def test_sigmoid_rampup_by_hand():
    """exp(-5 (1 - t)^2): 0 before the start, exp(-5) at it, exp(-1.25) half-way, 1 after."""
    assert sigmoid_rampup(0.1, 0.3, 0.4) == 0.0
    assert sigmoid_rampup(0.3, 0.3, 0.4) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(0.5, 0.3, 0.4) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(0.7, 0.3, 0.4) == 1.0
    assert (sigmoid_rampup(0.29, 0.3, 0.0), sigmoid_rampup(0.3, 0.3, 0.0)) == (0.0, 1.0)


def test_medcl_scale_weighs_every_term_but_the_scribble_loss():
    objective = build_objective(TrainConfig(method="medcl", crop_size=32, head_grid=4,
                                            head_hidden=16, code_dim=8), num_classes=4,
                                ignore_index=4)
    model = build_model("unet", in_channels=1, num_classes=4, widths=[4, 8])
    objective.medcl_scale = 0.25
    loss, terms = objective(model, _batch(), torch.Generator().manual_seed(0))
    scribble = terms["pce"] + terms["dice"]
    medcl = sum(v for k, v in terms.items() if k not in ("pce", "dice", "loss"))
    assert medcl > 0 and set(terms) > {"global", "local", "mix_consistency", "existence"}
    assert loss.item() == pytest.approx(scribble + 0.25 * medcl, rel=1e-4)


def test_medcl_rampup_rises_from_the_end_of_the_warmup(tiny_dataset, tmp_path):
    """12 steps, warm-up 0.25 (steps 0-2), ramp over 0.5 (progress 0.25-0.75: steps 3-9)."""
    cfg = tiny_config(tiny_dataset, method="medcl", num_scribbled=2, iterations=12,
                      val_interval=0, log_interval=1, supervised_warmup=0.25, medcl_rampup=0.5,
                      head_grid=4, head_hidden=16, code_dim=8, crop_size=32)
    train(cfg, tmp_path / "run")
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    scales = [r["medcl_scale"] for r in records if r["event"] == "step"]
    expected = [0.0] * 3 + [math.exp(-5 * (1 - (s / 12 - 0.25) / 0.5) ** 2) for s in range(3, 9)]
    assert scales == pytest.approx(expected + [1.0] * 3)
    with pytest.raises(ConfigError, match=r"medcl_rampup must be in \[0, 1 - supervised_warmup\]"
                       r" = \[0, 0.7\], got 0.8"):
        TrainConfig(method="recommended", medcl_rampup=0.8)


def test_slice_without_annotation_gets_no_existence_loss():
    """Tags: slice 0 annotated with class 2, slice 1 with nothing. Slice 0 gets background added;
    slice 1 keeps no tag, so the existence loss is that of slice 0 alone."""
    tags = torch.tensor([[False, False, True], [False, False, False]])
    assert slice_tags(tags).tolist() == [[True, False, True], [False, False, False]]
    probs = torch.tensor([0.2, 0.3, 0.5]).view(1, 3, 1, 1).expand(2, 3, 2, 2).clone()
    probs[1] = torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1)  # all mass on an untagged class
    # slice 0: -log(P_bg + P_2) = -log(0.7); slice 1 would give -log(eps) if it were counted
    loss = existence_loss(probs, slice_tags(tags))
    assert loss.item() == pytest.approx(-math.log(0.7), rel=1e-6)


def test_recommended_recipe_is_medcl_with_warmup_and_detected_mask():
    paper, recipe = TrainConfig(method="medcl"), TrainConfig(method="recommended")
    assert (paper.supervised_warmup, paper.nonzero_mask) == (0.0, False)  # the paper's preset
    assert (recipe.supervised_warmup, recipe.nonzero_mask) == (0.3, None)  # None: detected
    for name in ("dice_weight", "existence_weight", "global_weight", "local_weight",
                 "mix_pce_weight", "mix_consistency_weight", "labelled_fraction"):
        assert getattr(recipe, name) == getattr(paper, name), name
    assert TrainConfig(method="recommended", nonzero_mask=False).nonzero_mask is False


def test_recommended_run_resolves_the_mask_and_stores_it(tiny_dataset, tmp_path):
    """The generated volumes fill their grid (no zero filling): the detected mask is off."""
    cfg = tiny_config(tiny_dataset, method="recommended", iterations=2, val_interval=0)
    train(cfg, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["nonzero_mask"] is False and saved["supervised_warmup"] == 0.3


class _Spy(torch.nn.Module):
    """A UNet that records the batch it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.net = build_model("unet", in_channels=1, num_classes=4, widths=[4, 8])
        self.inputs: list[torch.Tensor] = []

    def forward(self, x, **kwargs):
        self.inputs.append(x.detach().clone())
        return self.net(x, **kwargs)


@pytest.mark.parametrize("mix_views, forwarded", [("both", 16), ("first", 12)])
def test_mix_views_first_mixes_each_image_first_view_only(mix_views, forwarded):
    from medcl.method.losses import one_hot
    from medcl.method.mixing import InterImageMix

    cfg = TrainConfig(method="medcl", crop_size=32, head_grid=4, head_hidden=16, code_dim=8,
                      mix_views=mix_views)
    objective = build_objective(cfg, num_classes=4, ignore_index=4)
    model, batch = _Spy(), _batch()
    loss, terms = objective(model, batch, torch.Generator().manual_seed(0))
    loss.backward()
    (inputs,) = model.inputs
    assert inputs.shape[0] == forwarded and {"mix_pce", "mix_consistency"} <= set(terms)
    # the same draws by hand: views first, then the partners of the first M views
    gen = torch.Generator().manual_seed(0)
    targets = one_hot(batch["labels"], 4, 4)
    views = objective.make_views(model, batch["image"], targets, gen)
    n_mixes = forwarded - 8
    partner, lam = objective.inter.sample(n_mixes, gen)
    torch.testing.assert_close(inputs[:8], views.image)
    torch.testing.assert_close(inputs[8:], InterImageMix.mix(views.image[:n_mixes], partner, lam))


def test_mix_views_rejects_unknown_choice():
    with pytest.raises(ConfigError, match="both, first"):
        TrainConfig(method="medcl", mix_views="second")


def test_mix_forward_separate_gives_the_views_their_own_batch_statistics():
    cfg = TrainConfig(method="medcl", crop_size=32, head_grid=4, head_hidden=16, code_dim=8,
                      mix_forward="separate")
    objective = build_objective(cfg, num_classes=4, ignore_index=4)
    model, batch = _Spy(), _batch()
    gen = torch.Generator().manual_seed(0)
    from medcl.method.losses import one_hot

    views = objective.make_views(model, batch["image"], one_hot(batch["labels"], 4, 4), gen)
    partner, lam = objective.inter.sample(8, gen)
    logits, mixed, _ = objective.predict(model, views, partner, lam, size=(32, 32))
    assert [x.shape[0] for x in model.inputs] == [8, 8]  # the mixes' pass, then the views'
    # the views' logits are those of the views alone (BatchNorm in training mode)
    torch.testing.assert_close(logits, model.net(views.image))
    joint = build_objective(TrainConfig(method="medcl", crop_size=32, head_grid=4,
                                        head_hidden=16, code_dim=8), num_classes=4,
                            ignore_index=4)
    joint_logits, _, _ = joint.predict(model, views, partner, lam, size=(32, 32))
    assert not torch.allclose(joint_logits, logits)  # one pass: statistics over views + mixes
    torch.testing.assert_close(mixed, model.net(model.inputs[0]))
