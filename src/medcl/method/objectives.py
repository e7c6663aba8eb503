"""Training objectives: what one step computes from a batch.

An objective is an ``nn.Module`` (it may own parameters, e.g. projection heads, which are trained
with the network) called as ``objective(model, batch, generator) -> (loss, terms)``, where
``batch`` holds ``image (B, C, H, W)``, ``labels (B, H, W)`` class indices with ``ignore_index``
and ``tags (B, K)`` bool image-level class tags, and ``terms`` maps each logged loss term to a
float. ``model`` follows the :class:`~medcl.models.segmenter.Segmenter` contract; an objective
never asks which network it trains.

* :class:`SupervisedObjective`: the pCE baseline (or dense CE for the upper bound).
* :class:`MedCLObjective`: the MedCL method (Zhang & Patel, MIDL 2026); which terms are on follows
  :class:`LossWeights`, so the ablation rows are presets of one objective.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.data.labels import BACKGROUND
from medcl.errors import ConfigError
from medcl.method.clustering import AnatomyClustering
from medcl.method.losses import (
    ScribbleLoss,
    SupervisedLoss,
    existence_loss,
    labelled_mask,
    mix_consistency_loss,
    one_hot,
    soft_partial_ce,
)
from medcl.method.mixing import InterImageMix, IntraImageMix, MixedViews

MIX_SPACES = ("image", "embedding")
#: which views are inter-mixed: "both" (2B mixes, the authors' code) or "first" (B mixes, made
#: of each image's first view: a step forwards 3B instead of 4B slices)
MIX_VIEWS = ("both", "first")
#: how views and mixes pass the network: "joint" (one forward of both, so BatchNorm statistics
#: mix real views with inter-mixed images) or "separate" (two forwards, each with its own)
MIX_FORWARDS = ("joint", "separate")
SUPERVISIONS = ("scribble", "dense")
#: the terms of the scribble loss: full weight during the MedCL ramp-up (``medcl_scale``)
SCRIBBLE_TERMS = ("pce", "dice")


def _as_floats(terms: dict[str, Tensor], loss: Tensor) -> dict[str, float]:
    return {**{k: v.item() for k, v in terms.items()}, "loss": loss.item()}


class SupervisedObjective(nn.Module):
    """The scribble loss on one forward pass (the pCE baseline, ``+ Dice`` with ``dice_weight``),
    or, with ``supervision="dense"``, CE (+ Dice) on dense labels (the upper bound)."""

    def __init__(self, *, supervision: str, ignore_index: int, pce_weight: float = 1.0,
                 dice_weight: float = 0.0) -> None:
        super().__init__()
        if supervision not in SUPERVISIONS:
            raise ConfigError(f"unknown supervision {supervision!r}; valid: "
                              f"{', '.join(SUPERVISIONS)}")
        self.dense = supervision == "dense"
        if self.dense:
            self.loss = SupervisedLoss(ignore_index=ignore_index, dice_weight=dice_weight)
        else:
            self.scribble = ScribbleLoss(ignore_index=ignore_index, pce_weight=pce_weight,
                                         dice_weight=dice_weight)

    def forward(self, model: nn.Module, batch: dict, generator: torch.Generator
                ) -> tuple[Tensor, dict[str, float]]:
        logits = model(batch["image"])
        if self.dense:
            loss = self.loss(logits, batch["labels"])
            return loss, {"loss": loss.item()}
        terms = self.scribble(logits, batch["labels"])
        loss = self.scribble.weigh(terms)
        return loss, _as_floats(terms, loss)


@dataclass(frozen=True)
class LossWeights:
    """The weight of every MedCL loss term, by the name it is logged under. A term with weight 0
    is not computed (and its module, e.g. the clustering heads, is not built).

    ``existence`` and ``mix_existence`` are the existence loss on the views and on their inter-mix;
    ``union_pce`` and ``prompt_consistency`` need a network with a union output (SAM-family).
    """

    pce: float = 1.0
    dice: float = 0.0
    existence: float = 0.0
    mix_pce: float = 0.0
    mix_existence: float = 0.0
    mix_consistency: float = 0.0
    prompt_consistency: float = 0.0
    union_pce: float = 0.0
    global_: float = 0.0
    local: float = 0.0

    def __post_init__(self) -> None:
        negative = {k: v for k, v in self.table().items() if v < 0}
        if negative:
            raise ConfigError(f"loss weights must be >= 0, got {negative}")

    def table(self) -> dict[str, float]:
        """``{term name: weight}`` (``global_`` is logged as ``global``)."""
        return {k.rstrip("_"): float(v) for k, v in asdict(self).items()}


class MedCLObjective(nn.Module):
    """The MedCL losses on two intra-mixed views and their inter-image mix.

    One step, for ``B`` source images, reads like the method section:

    1. :meth:`make_views`: two intra-mixed views per image (:class:`IntraImageMix`), made of the
       images or, with ``mix_space="embedding"``, of the network's image embeddings;
    2. :meth:`predict`: one forward pass over the ``2B`` views and (when a mix term is on) their
       ``2B`` inter-image mixes;
    3. :meth:`scribble_terms`: the scribble loss (pCE + Dice) and the existence loss of the views;
    4. :meth:`mix_terms`: pCE and existence on the mixed scribbles and tags, and the consistency
       between ``f(mix(x))`` and ``mix(f(x))``;
    5. :meth:`prompt_terms`: the union output's agreement with the summed class probabilities;
    6. :meth:`clustering_terms`: the anatomy-distribution clustering of the views.

    With ``supervised_only`` set (the trainer sets it during the supervised warm-up), a step is
    the scribble loss alone on the source images, one forward pass of ``B`` slices.
    ``medcl_scale`` (in ``[0, 1]``, set by the trainer during the MedCL ramp-up) multiplies the
    weight of every term but the scribble loss (``SCRIBBLE_TERMS``).

    Args:
        num_classes: ``K``; ``ignore_index`` marks unlabelled pixels.
        weights: the weight of each term (:class:`LossWeights`).
        intra: the intra-image mix; ``inter``: the inter-image mix.
        clustering: the clustering module (needed when ``global`` or ``local`` is weighted).
        mix_space: ``"image"``, or ``"embedding"``: views and mixes are made of
            ``model(image, stage="encode")`` and decoded with ``stage="decode"``.
        mix_views: ``"both"``: both views of every image are inter-mixed (``2B`` mixes, as in
            the authors' code); ``"first"``: only the first view of each image (``B`` mixes),
            so a step forwards ``3B`` slices instead of ``4B`` (docs/method.md).
        mix_forward: ``"joint"``: views and mixes in one forward pass (BatchNorm statistics
            over both, as in the authors' code); ``"separate"``: one pass for the views and one
            for the mixes, so the views' BatchNorm statistics are their own.
    """

    def __init__(self, *, num_classes: int, ignore_index: int, weights: LossWeights,
                 intra: IntraImageMix, inter: InterImageMix,
                 clustering: AnatomyClustering | None = None, mix_space: str = "image",
                 mix_views: str = "both", mix_forward: str = "joint") -> None:
        super().__init__()
        if mix_space not in MIX_SPACES:
            raise ConfigError(f"unknown mix_space {mix_space!r}; valid: {', '.join(MIX_SPACES)}")
        if mix_views not in MIX_VIEWS:
            raise ConfigError(f"unknown mix_views {mix_views!r}; valid: {', '.join(MIX_VIEWS)}")
        if mix_forward not in MIX_FORWARDS:
            raise ConfigError(f"unknown mix_forward {mix_forward!r}; valid: "
                              f"{', '.join(MIX_FORWARDS)}")
        self.weights = weights.table()
        self.use_clustering = bool(self.weights["global"] or self.weights["local"])
        if self.use_clustering and clustering is None:
            raise ConfigError("the global/local clustering terms need a clustering module")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.intra = intra
        self.inter = inter
        self.clustering = clustering if self.use_clustering else None
        self.use_inter = bool(self.weights["mix_pce"] or self.weights["mix_consistency"])
        self.use_union = bool(self.weights["prompt_consistency"] or self.weights["union_pce"])
        self.mix_space = mix_space
        self.mix_views = mix_views
        self.mix_forward = mix_forward
        self.scribble = ScribbleLoss(ignore_index=ignore_index, pce_weight=self.weights["pce"],
                                     dice_weight=self.weights["dice"])
        self.supervised_only = False
        self.medcl_scale = 1.0

    def forward(self, model: nn.Module, batch: dict, generator: torch.Generator
                ) -> tuple[Tensor, dict[str, float]]:
        terms = self.terms(model, batch, generator)
        loss = sum(self.weight(name) * value for name, value in terms.items())
        return loss, _as_floats(terms, loss)

    def weight(self, name: str) -> float:
        """The weight of term ``name`` in this step: its set weight, times ``medcl_scale`` for
        every term but the scribble loss."""
        scale = 1.0 if name in SCRIBBLE_TERMS else self.medcl_scale
        return self.weights[name] * scale

    def terms(self, model: nn.Module, batch: dict, generator: torch.Generator
              ) -> dict[str, Tensor]:
        """Every active loss term, unweighted, as a scalar tensor in the graph (``forward``
        weights them with ``self.weights`` and sums them)."""
        targets = one_hot(batch["labels"], self.num_classes, self.ignore_index)
        if self.supervised_only:
            return self.scribble.soft(model(batch["image"]), targets)
        tags = slice_tags(batch["tags"])
        views = self.make_views(model, batch["image"], targets, generator)
        view_tags = tags[views.source.to(tags.device)]
        n_views = views.image.shape[0]
        n_mixes = n_views if self.mix_views == "both" else n_views // 2
        partner, lam = (self.inter.sample(n_mixes, generator) if self.use_inter
                        else (None, None))
        logits, mixed_logits, union_logits = self.predict(model, views, partner, lam,
                                                          size=tuple(batch["image"].shape[-2:]))
        probs = logits.softmax(1)
        terms = self.scribble_terms(logits, probs, views.targets, view_tags)
        if self.use_union:
            terms.update(self.prompt_terms(probs, union_logits, views.targets))
        if self.use_inter:
            terms.update(self.mix_terms(probs[:n_mixes], mixed_logits, views.targets[:n_mixes],
                                        view_tags[:n_mixes], partner, lam))
        if self.use_clustering:
            terms.update(self.clustering_terms(probs))
        return terms

    # -- the steps ------------------------------------------------------------------------------
    def make_views(self, model: nn.Module, image: Tensor, targets: Tensor,
                   generator: torch.Generator) -> MixedViews:
        """Two intra-mixed views of each image (or of its embedding), ``2B`` in all."""
        source = model(image, stage="encode") if self.mix_space == "embedding" else image
        return self.intra(source, targets, generator=generator)

    def predict(self, model: nn.Module, views: MixedViews, partner: Tensor | None,
                lam: Tensor | None, *, size: tuple[int, int]
                ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Logits of the views ``(2B, K, H, W)``, of their inter-mixes ``(M, K, H, W)`` (or
        ``None``) and the views' union logits ``(2B, 1, H, W)`` (or ``None``). With
        ``mix_forward="joint"`` from ONE forward pass: the mixes depend on the inputs only, so
        one larger batch serves both; with ``"separate"`` from one pass each. The union is asked
        for the views only (``return_union=2B``). The first ``M = len(partner)`` views are mixed
        (``M`` is ``2B`` or ``B``, see ``mix_views``)."""
        kwargs = {"stage": "decode", "size": size} if self.mix_space == "embedding" else {}
        n_views = views.image.shape[0]
        mixes = (None if partner is None
                 else InterImageMix.mix(views.image[:partner.shape[0]], partner, lam))
        separate = mixes is not None and self.mix_forward == "separate"
        mixed_logits = model(mixes, **kwargs) if separate else None
        joint = mixes is not None and not separate
        inputs = torch.cat([views.image, mixes]) if joint else views.image
        if self.use_union:  # the prompt terms read the views' union only: never the mixes'
            kwargs["return_union"] = n_views
        out = model(inputs, **kwargs)
        all_logits, union = out if self.use_union else (out, None)
        if joint:
            mixed_logits = all_logits[n_views:]
        return all_logits[:n_views], mixed_logits, union

    def scribble_terms(self, logits: Tensor, probs: Tensor, targets: Tensor, tags: Tensor
                       ) -> dict[str, Tensor]:
        """Scribble loss (pCE, Dice) and existence loss of the views."""
        terms = self.scribble.soft(logits, targets, probs)
        if self.weights["existence"]:
            terms["existence"] = existence_loss(probs, tags)
        return terms

    def mix_terms(self, probs: Tensor, mixed_logits: Tensor, targets: Tensor, tags: Tensor,
                  partner: Tensor, lam: Tensor) -> dict[str, Tensor]:
        """pCE on the mixed scribbles, existence with the partners' tag union, consistency
        between the prediction of the mix and the mix of the predictions; ``probs (M, K, H, W)``,
        ``targets`` and ``tags`` are those of the ``M`` views that were mixed."""
        mixed_probs = mixed_logits.softmax(1)
        terms = {"mix_pce": soft_partial_ce(mixed_logits,
                                            InterImageMix.mix(targets, partner, lam))}
        if self.weights["mix_existence"]:
            terms["mix_existence"] = existence_loss(mixed_probs,
                                                    InterImageMix.mix_tags(tags, partner))
        terms["mix_consistency"] = mix_consistency_loss(InterImageMix.mix(probs, partner, lam),
                                                        mixed_probs)
        return terms

    def prompt_terms(self, probs: Tensor, union_logits: Tensor, targets: Tensor
                     ) -> dict[str, Tensor]:
        """Prompt-level anatomy consistency: the union output's foreground probability
        ``sigmoid(u)`` agrees with the summed class probabilities ``sum_{c>=1} P_c`` (mean squared
        difference), and the union output gets a binary pCE on the scribbled pixels."""
        fg_sum = probs[:, BACKGROUND + 1:].sum(1, keepdim=True)
        labelled = labelled_mask(targets).to(union_logits.dtype)
        fg_target = targets[:, BACKGROUND + 1:].sum(1, keepdim=True)
        bce = F.binary_cross_entropy_with_logits(union_logits, fg_target, reduction="none")
        return {"prompt_consistency": (union_logits.sigmoid() - fg_sum).pow(2).mean(),
                "union_pce": (bce * labelled).sum() / labelled.sum().clamp(min=1.0)}

    def clustering_terms(self, probs: Tensor) -> dict[str, Tensor]:
        """Global (batch) and local (two-view) anatomy-distribution clustering."""
        return self.clustering(probs)


def slice_tags(tags: Tensor) -> Tensor:
    """The classes present in each slice ``(B, K)`` bool: its annotated classes plus background.

    A slice whose annotation holds no class at all keeps no tag, so it contributes no existence
    loss (:func:`~medcl.method.losses.existence_loss` skips it): nothing is known of its content,
    and pushing it to all-background would teach that an unannotated slice is empty.
    """
    tags = tags.clone()
    tags[:, BACKGROUND] |= tags.any(dim=1)
    return tags
