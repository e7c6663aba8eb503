"""Training objectives: what one step computes from a batch.

An objective is an ``nn.Module`` (it may own parameters, e.g. projection heads, which are trained
with the network) called as ``objective(model, batch, generator) -> (loss, terms)``, where
``batch`` holds ``image (B, C, H, W)``, ``labels (B, H, W)`` class indices with ``ignore_index``
and ``tags (B, K)`` bool image-level class tags, and ``terms`` maps each logged loss term to a
float.

* :class:`SupervisedObjective`: the pCE baseline (or dense CE for the upper bound).
* :class:`MedCLObjective`: the MedCL method (Zhang & Patel, MIDL 2026); which terms are on follows
  the loss weights, so the ablation rows are presets of one objective (``config.METHOD_PRESETS``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.errors import ConfigError
from medcl.method.clustering import (
    AnatomyProjector,
    PrototypeClustering,
    anatomy_maps,
    global_cluster_loss,
    nt_xent,
)
from medcl.method.losses import (
    DiceLoss,
    PartialCrossEntropy,
    SupervisedLoss,
    existence_loss,
    mix_consistency_loss,
    one_hot,
    soft_dice_loss,
    soft_partial_ce,
)
from medcl.method.mixing import InterImageMix, IntraImageMix
from medcl.models import SAM_MODELS
from medcl.runtime.distributed import gather_with_grad
from medcl.training.config import TrainConfig

BACKGROUND = 0


class SupervisedObjective(nn.Module):
    """pCE on scribbled pixels (+ ``dice_weight`` x Dice on them), or dense CE (+ Dice)."""

    def __init__(self, *, supervision: str, ignore_index: int, pce_weight: float = 1.0,
                 dice_weight: float = 0.0) -> None:
        super().__init__()
        self.dense = supervision == "dense"
        self.pce_weight = pce_weight
        self.dice_weight = dice_weight
        if self.dense:
            self.loss = SupervisedLoss(ignore_index=ignore_index, dice_weight=dice_weight)
        else:
            self.pce = PartialCrossEntropy(ignore_index=ignore_index)
            self.dice = DiceLoss(ignore_index=ignore_index)

    def forward(self, model: nn.Module, batch: dict, generator: torch.Generator
                ) -> tuple[Tensor, dict[str, float]]:
        logits = model(batch["image"])
        if self.dense:
            loss = self.loss(logits, batch["labels"])
            return loss, {"loss": loss.item()}
        terms = {"pce": self.pce(logits, batch["labels"])}
        if self.dice_weight:
            terms["dice"] = self.dice(logits, batch["labels"])
        loss = self.pce_weight * terms["pce"] + self.dice_weight * terms.get("dice", 0.0)
        return loss, {**{k: v.item() for k, v in terms.items()}, "loss": loss.item()}


class MedCLObjective(nn.Module):
    """The MedCL losses on two intra-mixed views and their inter-image mix.

    Per step, for ``B`` source images:

    1. targets ``Y`` = one-hot of the scribbles (zero where unlabelled); tags ``S`` (background
       always included);
    2. two views per image (:class:`~medcl.mixing.IntraImageMix`, or plain rotations without
       ``intra_mix``) -> ``2B`` views, ``P = softmax(f(views))``;
    3. scribble loss on the views: ``pce_weight`` x soft pCE + ``dice_weight`` x Dice over the
       scribbled pixels; existence loss with each view's *own* source image's tags;
    4. inter-image mix of the views (when a mix weight is on): ``P~ = softmax(f(mix(views)))``
       (computed in the same forward pass as ``P``, one batch of ``4B`` slices),
       pCE on the mixed targets, consistency between ``P~`` and ``mix(P)``, existence with the
       union of the partners' tags;
    5. clustering on ``anatomy_maps(P)``: global loss on the anatomy codes of all views, local
       NT-Xent between the individual codes of the two views of each image (or the prototype
       form).

    With ``supervised_only`` set (the trainer sets it during ``supervised_warmup``), a step is
    the scribble loss alone on the source images: ``pce_weight`` x pCE + ``dice_weight`` x Dice,
    one forward pass of ``B`` slices.

    Args:
        cfg: the training configuration (weights and mixing/clustering options).
        num_classes: ``K``; ``ignore_index`` marks unlabelled pixels.
    """

    def __init__(self, cfg: TrainConfig, *, num_classes: int, ignore_index: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.w = {name: getattr(cfg, f"{name}_weight") for name in
                  ("pce", "dice", "mix_pce", "mix_consistency", "existence", "global", "local")}
        self.intra = IntraImageMix(max_angle=cfg.intra_max_angle, box=cfg.intra_box,
                                   box_min=cfg.intra_box_min, box_max=cfg.intra_box_max,
                                   roi_margin=cfg.roi_margin, beta=cfg.mix_beta,
                                   blend=bool(cfg.intra_mix))
        self.use_inter = bool(self.w["mix_pce"] or self.w["mix_consistency"])
        self.inter = InterImageMix(partner=cfg.inter_partner, beta=cfg.mix_beta)
        self.use_clustering = bool(self.w["global"] or self.w["local"])
        self.prototype = cfg.clustering == "prototype"
        if self.use_clustering:
            head = dict(code_dim=cfg.code_dim, form=cfg.head, grid=cfg.head_grid,
                        hidden=cfg.head_hidden, input_size=(cfg.crop_size, cfg.crop_size))
            self.anatomy_head = AnatomyProjector(**head)
            self.individual_head = AnatomyProjector(**head)
            if self.prototype:
                self.prototypes = PrototypeClustering(code_dim=cfg.code_dim,
                                                      num_prototypes=cfg.num_prototypes)
        self.temperature = cfg.temperature
        self.supervised_only = False
        is_sam = cfg.model in SAM_MODELS
        self.w["prompt_consistency"] = (cfg.prompt_consistency_weight or 0.0) if is_sam else 0.0
        self.use_union = bool(self.w["prompt_consistency"])
        self.feature_mix = cfg.mix_space == "embedding" or (
            cfg.mix_space == "auto" and is_sam and cfg.sam_encoder == "frozen")
        if self.feature_mix and not is_sam:
            raise ConfigError(f"mix_space='embedding' needs a SAM model ({', '.join(SAM_MODELS)}), "
                              f"got {cfg.model!r}")

    def _scribble_terms(self, logits: Tensor, probs: Tensor, targets: Tensor, tags: Tensor,
                        prefix: str = "") -> dict[str, Tensor]:
        terms = {f"{prefix}pce": soft_partial_ce(logits, targets)}
        if not prefix and self.w["dice"]:
            labelled = (targets.sum(1, keepdim=True) > 0).to(probs.dtype)
            terms["dice"] = soft_dice_loss(probs, targets, labelled)
        if self.w["existence"]:
            terms[f"{prefix}existence"] = existence_loss(probs, tags)
        return terms

    def _clustering_terms(self, probs: Tensor, batch: int) -> dict[str, Tensor]:
        maps = anatomy_maps(probs)
        anatomy = self.anatomy_head(maps)
        individual = self.individual_head(maps)
        if self.prototype:
            return {"global": self.prototypes(anatomy[:batch], anatomy[batch:]),
                    "local": nt_xent(individual[:batch].flatten(1), individual[batch:].flatten(1),
                                     temperature=self.temperature)}
        # the batch centres are computed over the global batch when training on several processes
        return {"global": global_cluster_loss(gather_with_grad(anatomy)),
                "local": nt_xent(individual[:batch].flatten(1), individual[batch:].flatten(1),
                                 temperature=self.temperature)}

    def _prompt_terms(self, probs: Tensor, union_logits: Tensor, targets: Tensor
                      ) -> dict[str, Tensor]:
        """SAM's prompt-level anatomy consistency: the union prompt's foreground probability
        ``sigmoid(u)`` agrees with the summed single-class probabilities ``sum_{c>=1} P_c``
        (mean squared difference), and the union mask gets a binary pCE on scribbled pixels."""
        fg_sum = probs[:, 1:].sum(1, keepdim=True)
        union = union_logits.sigmoid()
        labelled = (targets.sum(1, keepdim=True) > 0).to(union_logits.dtype)
        fg_target = targets[:, 1:].sum(1, keepdim=True)
        bce = F.binary_cross_entropy_with_logits(union_logits, fg_target, reduction="none")
        return {"prompt_consistency": (union - fg_sum).pow(2).mean(),
                "union_pce": (bce * labelled).sum() / labelled.sum().clamp(min=1.0)}

    def forward(self, model: nn.Module, batch: dict, generator: torch.Generator
                ) -> tuple[Tensor, dict[str, float]]:
        terms = self.terms(model, batch, generator)
        loss = sum(self.weight(name) * value for name, value in terms.items())
        return loss, {**{k: v.item() for k, v in terms.items()}, "loss": loss.item()}

    def terms(self, model: nn.Module, batch: dict, generator: torch.Generator
              ) -> dict[str, Tensor]:
        """Every active loss term, unweighted, as a scalar tensor in the graph (``forward``
        weights and sums them; ``weight(name)`` gives each term's weight)."""
        image, labels = batch["image"], batch["labels"]
        tags = batch["tags"].clone()
        tags[:, BACKGROUND] = True
        targets = one_hot(labels, self.num_classes, self.ignore_index)
        if self.supervised_only:
            return self._supervised_terms(model, image, targets)
        size = tuple(image.shape[-2:])
        # embedding-space mixing (frozen SAM encoder): the views and mixes are made of the
        # cached image embeddings; the targets are mixed on the pixel grid alike
        source = model(image, stage="encode") if self.feature_mix else image
        views = self.intra(source, targets, generator=generator)
        view_tags = tags[views.source.to(tags.device)]
        n_views = views.image.shape[0]
        inputs = views.image
        if self.use_inter:
            partner, lam = self.inter.sample(n_views, generator)
            inputs = torch.cat([views.image, InterImageMix.mix(views.image, partner, lam)])
        # one forward pass for the views and their mix: the mixed images depend on the inputs
        # only, so both predictions come from a single (larger, faster) batch
        kwargs = {"stage": "decode", "size": size} if self.feature_mix else {}
        if self.use_union:
            kwargs["return_union"] = True
        out = model(inputs, **kwargs)
        all_logits, all_union = out if self.use_union else (out, None)
        logits = all_logits[:n_views]
        probs = logits.softmax(1)
        terms = self._scribble_terms(logits, probs, views.targets, view_tags)
        if self.use_union:
            terms.update(self._prompt_terms(probs, all_union[:n_views], views.targets))
        if self.use_inter:
            mixed_logits = all_logits[n_views:]
            mixed_probs = mixed_logits.softmax(1)
            terms.update(self._scribble_terms(mixed_logits, mixed_probs,
                                              InterImageMix.mix(views.targets, partner, lam),
                                              InterImageMix.mix_tags(view_tags, partner),
                                              prefix="mix_"))
            terms["mix_consistency"] = mix_consistency_loss(
                InterImageMix.mix(probs, partner, lam), mixed_probs)
        if self.use_clustering:
            terms.update(self._clustering_terms(probs, image.shape[0]))
        return terms

    def _supervised_terms(self, model: nn.Module, image: Tensor, targets: Tensor
                          ) -> dict[str, Tensor]:
        logits = model(image)
        terms = {"pce": soft_partial_ce(logits, targets)}
        if self.w["dice"]:
            labelled = (targets.sum(1, keepdim=True) > 0).to(logits.dtype)
            terms["dice"] = soft_dice_loss(logits.softmax(1), targets, labelled)
        return terms

    def weight(self, term: str) -> float:
        """The weight of a term named in ``terms``' output."""
        if term == "mix_existence":
            return self.w["existence"]
        if term == "union_pce":
            return self.w["pce"]
        return self.w[term]


def build_objective(cfg: TrainConfig, *, num_classes: int, ignore_index: int) -> nn.Module:
    """The objective for ``cfg.method`` (``pce`` -> supervised, others -> MedCL)."""
    if cfg.method == "pce":
        return SupervisedObjective(supervision=cfg.supervision, ignore_index=ignore_index,
                                   pce_weight=cfg.pce_weight, dice_weight=cfg.dice_weight)
    return MedCLObjective(cfg, num_classes=num_classes, ignore_index=ignore_index)
