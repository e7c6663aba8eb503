"""MedCL's mixing operations on batches of images and soft targets.

* **Intra-image mix** (:class:`IntraImageMix`): each image yields two views. A view rotates the
  image by an angle ``theta`` and by another angle ``theta'``; inside a square box it keeps the
  ``theta`` copy, outside it blends ``lam R_theta x + (1 - lam) R_theta' x`` with
  ``lam ~ Beta(beta, beta)``. Targets are mixed the same way. Pixels rotated in from outside the
  image carry no target (unlabelled), never background.
* **Inter-image mix** (:class:`InterImageMix`): ``x~_k = lam_k x_k + (1 - lam_k) x_pi(k)`` with a
  partner ``pi(k)`` and ``lam_k ~ Beta(beta, beta)``; the same mix applies to targets,
  predictions and (as a union) to class tags.

Targets are soft ``(B, K, H, W)`` maps: the one-hot of the scribbles with all-zero vectors at
unlabelled pixels, so that mixing them gives partial-label weights that
:func:`medcl.method.losses.soft_partial_ce` uses directly. All randomness comes from a CPU
:class:`torch.Generator`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from medcl.data.warp import rotation_matrices, warp
from medcl.errors import ConfigError

BOX_POLICIES = ("roi", "random")
PARTNERS = ("reverse", "shuffle")
#: the largest intra-mix rotation, in degrees (half a turn: larger angles repeat smaller ones)
MAX_ANGLE = 180.0


def sample_beta(alpha: float, n: int, generator: torch.Generator) -> Tensor:
    """``n`` draws of ``Beta(alpha, alpha)`` from ``generator`` (Johnk's method), float32 CPU."""
    out = torch.empty(n, dtype=torch.float64)
    todo = torch.arange(n)
    while len(todo):
        u = torch.rand(len(todo), generator=generator, dtype=torch.float64) ** (1 / alpha)
        v = torch.rand(len(todo), generator=generator, dtype=torch.float64) ** (1 / alpha)
        ok = ((u + v) <= 1) & ((u + v) > 0)
        out[todo[ok]] = u[ok] / (u[ok] + v[ok])
        todo = todo[~ok]
    return out.float()


def box_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """``(N, 1, H, W)`` float masks, 1 inside ``boxes (N, 4)`` = ``(top, left, bottom, right)``
    (bottom/right exclusive)."""
    rows = torch.arange(height, device=boxes.device).view(1, height, 1)
    cols = torch.arange(width, device=boxes.device).view(1, 1, width)
    top, left, bottom, right = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    return inside.unsqueeze(1).float()


@dataclass
class MixedViews:
    """Two intra-mixed views per source image.

    Attributes:
        image: ``(2B, C, H, W)``; views ``k`` and ``k + B`` come from source image ``k``.
        targets: ``(2B, K, H, W)`` soft targets.
        source: ``(2B,)`` index of each view's source image in the input batch.
    """

    image: Tensor
    targets: Tensor
    source: Tensor


class IntraImageMix:
    """Intra-image mix: two views per image (see the module docstring).

    Args:
        max_angle: rotation angles are uniform in ``[-max_angle, max_angle]`` degrees (the
            authors' code uses the full circle, 180; the paper describes a small rotation).
        box: ``"roi"``: the kept box is the bounding box of the scribbled foreground (plus
            ``roi_margin``), as the paper describes; images without foreground scribbles fall
            back to ``"random"``: a square box of side ``box_min..box_max`` times the shorter
            image side at a random position (the authors' code, 0.9..1.0).
        beta: parameter of the ``Beta(beta, beta)`` blending weight.
        blend: ``False`` makes each view the plain ``theta`` rotation (no box, no blending):
            two views for the clustering losses without mixing (the "clustering only" ablation).
    """

    def __init__(self, *, max_angle: float = 30.0, box: str = "roi", box_min: float = 0.9,
                 box_max: float = 1.0, roi_margin: float = 0.1, beta: float = 0.5,
                 blend: bool = True) -> None:
        if box not in BOX_POLICIES:
            raise ConfigError(f"unknown box policy {box!r}; valid: {', '.join(BOX_POLICIES)}")
        if not 0 <= max_angle <= MAX_ANGLE:
            raise ConfigError(f"max_angle must be in [0, {MAX_ANGLE:g}] degrees, got {max_angle}")
        if not 0 < box_min <= box_max <= 1:
            raise ConfigError(f"need 0 < box_min <= box_max <= 1, got {box_min}, {box_max}")
        if roi_margin < 0 or beta <= 0:
            raise ConfigError(f"roi_margin must be >= 0 and beta > 0, got {roi_margin}, {beta}")
        self.max_angle = math.radians(max_angle)
        self.box = box
        self.box_range = (box_min, box_max)
        self.roi_margin = roi_margin
        self.beta = beta
        self.blend = blend

    def _random_boxes(self, n: int, height: int, width: int, generator: torch.Generator) -> Tensor:
        draws = torch.rand(n, 3, generator=generator)
        low, high = self.box_range
        side = ((low + (high - low) * draws[:, 0]) * min(height, width)).round().long().clamp(min=1)
        top = (draws[:, 1] * (height - side + 1)).floor().long()
        left = (draws[:, 2] * (width - side + 1)).floor().long()
        return torch.stack([top, left, top + side, left + side], 1)

    def _roi_boxes(self, targets: Tensor, fallback: Tensor) -> Tensor:
        height, width = targets.shape[-2:]
        fg = targets[:, 1:].sum(1) > 0
        rows, cols = fg.any(2), fg.any(1)
        has = rows.any(1)
        idx_r = torch.arange(height, device=targets.device)
        idx_c = torch.arange(width, device=targets.device)
        top = torch.where(rows, idx_r, height).min(1).values
        bottom = torch.where(rows, idx_r, -1).max(1).values + 1
        left = torch.where(cols, idx_c, width).min(1).values
        right = torch.where(cols, idx_c, -1).max(1).values + 1
        margin_r = ((bottom - top).float() * self.roi_margin).ceil().long()
        margin_c = ((right - left).float() * self.roi_margin).ceil().long()
        boxes = torch.stack([(top - margin_r).clamp(min=0), (left - margin_c).clamp(min=0),
                             (bottom + margin_r).clamp(max=height),
                             (right + margin_c).clamp(max=width)], 1)
        return torch.where(has.view(-1, 1), boxes, fallback.to(boxes.device))

    def __call__(self, image: Tensor, targets: Tensor, *, generator: torch.Generator) -> MixedViews:
        """Make two views of each image.

        Args:
            image: ``(B, C, h, w)``: images, or feature maps (e.g. SAM image embeddings) on a
                coarser grid of the same aspect ratio as the targets.
            targets: ``(B, K, H, W)`` soft targets (all-zero where unlabelled).

        Rotations act in normalised coordinates, so both grids turn alike; the box is chosen on
        the target grid and scaled to the image grid.
        """
        if image.shape[0] != targets.shape[0] or (
                image.shape[-2] * targets.shape[-1] != image.shape[-1] * targets.shape[-2]):
            raise ValueError(f"image {tuple(image.shape)} and targets {tuple(targets.shape)} "
                             "differ in batch size or aspect ratio")
        batch, height, width = targets.shape[0], targets.shape[-2], targets.shape[-1]
        n = 2 * batch
        source = torch.arange(batch).repeat(2)
        angles = (2 * torch.rand(2, n, generator=generator) - 1) * self.max_angle
        lam = sample_beta(self.beta, n, generator).to(image.device).view(n, 1, 1, 1)
        fallback = self._random_boxes(n, height, width, generator)
        x, y = image[source.to(image.device)], targets[source.to(targets.device)]
        rot = [rotation_matrices(a, height, width) for a in angles]
        if not self.blend:
            return MixedViews(image=warp(x, rot[0], mode="bilinear"),
                              targets=warp(y, rot[0], mode="nearest"), source=source)
        x_keep, x_other = warp(x, rot[0], mode="bilinear"), warp(x, rot[1], mode="bilinear")
        y_keep, y_other = warp(y, rot[0], mode="nearest"), warp(y, rot[1], mode="nearest")
        boxes = self._roi_boxes(y_keep, fallback) if self.box == "roi" else fallback
        inside = box_masks(boxes.to(image.device), height, width)
        inside_x = inside
        if image.shape[-2:] != targets.shape[-2:]:
            ratio = image.shape[-2] / height
            boxes_x = torch.cat([(boxes[:, :2] * ratio).floor(), (boxes[:, 2:] * ratio).ceil()], 1)
            inside_x = box_masks(boxes_x.long().to(image.device), *image.shape[-2:])
        blend_x = lam * x_keep + (1 - lam) * x_other
        blend_y = lam * y_keep + (1 - lam) * y_other
        return MixedViews(image=inside_x * x_keep + (1 - inside_x) * blend_x,
                          targets=inside * y_keep + (1 - inside) * blend_y, source=source)


class InterImageMix:
    """Inter-image mixup with a partner per sample.

    Args:
        partner: ``"reverse"`` (sample ``k`` mixes with ``B - 1 - k``, as in the authors' code)
            or ``"shuffle"`` (a random permutation).
        beta: parameter of the ``Beta(beta, beta)`` weights.
    """

    def __init__(self, *, partner: str = "reverse", beta: float = 0.5) -> None:
        if partner not in PARTNERS:
            raise ConfigError(f"unknown partner policy {partner!r}; valid: {', '.join(PARTNERS)}")
        if beta <= 0:
            raise ConfigError(f"beta must be > 0, got {beta}")
        self.partner = partner
        self.beta = beta

    def sample(self, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(partner (B,) long, lam (B,) float)`` on the CPU."""
        if self.partner == "reverse":
            partner = torch.arange(batch - 1, -1, -1)
        else:
            partner = torch.randperm(batch, generator=generator)
        return partner, sample_beta(self.beta, batch, generator)

    @staticmethod
    def mix(x: Tensor, partner: Tensor, lam: Tensor) -> Tensor:
        """``lam x + (1 - lam) x[partner]`` for ``x (B, ...)``."""
        lam = lam.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return lam * x + (1 - lam) * x[partner.to(x.device)]

    @staticmethod
    def mix_tags(tags: Tensor, partner: Tensor) -> Tensor:
        """Class tags of the mixed images ``(B, K)`` bool: the union of both partners' tags
        where both are tagged; no tag where either is not (nothing is known of that image's
        content, so the mix's existence loss must not push it onto its partner's classes)."""
        partner_tags = tags[partner.to(tags.device)]
        known = tags.any(dim=1) & partner_tags.any(dim=1)
        return (tags | partner_tags) & known[:, None]
