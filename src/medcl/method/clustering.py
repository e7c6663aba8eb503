"""MedCL's anatomy-distribution clustering.

Anatomy maps ``A (B, K+1, H, W)`` are the ``K`` class probability maps plus the foreground union
``sum_{c>=1} P_c`` (:func:`anatomy_maps`). Two projection heads map each of the ``K+1`` maps to a
``D``-dimensional code: anatomy codes ``a`` and individual codes ``e`` ``(B, K+1, D)``.

Losses:

* :func:`global_cluster_loss` (batch level): class centres ``mu_c = mean_b a_{b,c}`` (not
  detached); compactness ``n_{b,c} = exp cos(a_{b,c}, mu_c)``; separation
  ``S = sum_{i<j<K} exp cos(mu_i, mu_j)`` over the class centres; anatomy consistency
  ``alpha = exp cos(mu_union, sum_{c>=1} mu_c)``;
  ``L = mean_{b,c} -log((n + alpha) / (n + alpha + S))``.
* :func:`nt_xent` (instance level): NT-Xent between the flattened individual codes of two views
  of the same image (positives) against every other sample of the batch.
* :class:`PrototypeClustering`: the alternative the paper's text describes, codes assigned to
  learnable anatomy prototypes with a Sinkhorn online assignment and a swapped prediction between
  the two views (SwAV-like), plus the anatomy-consistency term ``1 - cos(a_union, sum a_c)``.

The projection heads (:class:`AnatomyProjector`) come in two forms: ``"pooled"`` (ours, default)
average-pools each map to a ``grid x grid`` layout before a small MLP, so it works at any image
size and costs ``grid^2 * hidden + hidden * D`` parameters; ``"full"`` is the authors' form,
``LayerNorm(H*W) -> Linear(H*W, hidden) -> GELU -> Linear(hidden, D)``, tied to one input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.errors import ConfigError
from medcl.runtime.distributed import gather_with_grad

HEAD_FORMS = ("pooled", "full")
CLUSTERINGS = ("contrastive", "prototype")
#: projection-head defaults (the training configuration's defaults are these)
CODE_DIM = 128
HEAD_FORM = "pooled"
HEAD_GRID = 16
HEAD_HIDDEN = 512
NUM_PROTOTYPES = 128
#: the fewest prototypes a Sinkhorn assignment can spread codes over
MIN_PROTOTYPES = 2
TEMPERATURE = 0.5


def anatomy_maps(probs: Tensor) -> Tensor:
    """``probs (B, K, H, W)`` -> ``(B, K+1, H, W)``: the class maps and the foreground union."""
    return torch.cat([probs, probs[:, 1:].sum(1, keepdim=True)], dim=1)


class AnatomyProjector(nn.Module):
    """Projects each anatomy map to a code.

    Args:
        code_dim: ``D``.
        form: ``"pooled"`` (resolution-independent) or ``"full"`` (the authors' head, needs
            ``input_size``).
        grid: pooled layout side for ``"pooled"``.
        hidden: MLP width.
        input_size: ``(H, W)`` the ``"full"`` form is built for.

    ``forward(maps (B, M, H, W) probabilities) -> codes (B, M, D)``.
    """

    def __init__(self, *, code_dim: int = CODE_DIM, form: str = HEAD_FORM, grid: int = HEAD_GRID,
                 hidden: int = HEAD_HIDDEN, input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if form not in HEAD_FORMS:
            raise ConfigError(f"unknown head form {form!r}; valid: {', '.join(HEAD_FORMS)}")
        if min(code_dim, grid, hidden) <= 0:
            raise ConfigError(f"code_dim, grid and hidden must be > 0, "
                              f"got {code_dim}, {grid}, {hidden}")
        if form == "full" and input_size is None:
            raise ConfigError("the 'full' head form needs input_size=(H, W)")
        self.form = form
        self.grid = grid
        self.input_size = tuple(input_size) if input_size else None
        features = grid * grid if form == "pooled" else input_size[0] * input_size[1]
        self.mlp = nn.Sequential(nn.LayerNorm(features), nn.Linear(features, hidden), nn.GELU(),
                                 nn.Linear(hidden, code_dim))

    def forward(self, maps: Tensor) -> Tensor:
        if maps.dim() != 4:
            raise ValueError(f"expected maps (B, M, H, W), got {tuple(maps.shape)}")
        if self.form == "pooled":
            maps = F.adaptive_avg_pool2d(maps, self.grid)
        elif tuple(maps.shape[-2:]) != self.input_size:
            raise ValueError(f"the 'full' head is built for {self.input_size}, got "
                             f"{tuple(maps.shape[-2:])}")
        return self.mlp(maps.flatten(2))


def _exp_cos(x: Tensor, y: Tensor) -> Tensor:
    return torch.exp(F.cosine_similarity(x, y, dim=-1))


def global_cluster_loss(codes: Tensor) -> Tensor:
    """Batch-level compactness / separation / anatomy-consistency loss (module docstring).

    Args:
        codes: ``(N, K+1, D)`` anatomy codes; the last of the ``K+1`` is the foreground union.
    """
    if codes.dim() != 3 or codes.shape[1] < 3:
        raise ValueError(f"expected codes (N, K+1, D) with K >= 2, got {tuple(codes.shape)}")
    centres = codes.mean(0)
    classes, union = centres[:-1], centres[-1]
    compact = _exp_cos(codes, centres.unsqueeze(0))
    i, j = torch.triu_indices(len(classes), len(classes), offset=1)
    separation = _exp_cos(classes[i], classes[j]).sum()
    consistency = _exp_cos(union, classes[1:].sum(0))
    return -torch.log((compact + consistency) / (compact + consistency + separation)).mean()


def nt_xent(z1: Tensor, z2: Tensor, *, temperature: float = TEMPERATURE) -> Tensor:
    """NT-Xent between two views: ``z1[k]`` and ``z2[k]`` are positives, ``(B, F)`` each."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"expected two (B, F) tensors, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    batch = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * batch, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(z.device)
    return F.cross_entropy(sim, targets)


@torch.no_grad()
def sinkhorn(scores: Tensor, *, eps: float = 0.05, iterations: int = 3) -> Tensor:
    """Balanced soft assignment of ``N`` samples to ``P`` prototypes, ``(N, P)`` rows sum to 1."""
    q = torch.exp((scores - scores.max()) / eps).t()
    q /= q.sum()
    num_protos, num_samples = q.shape
    for _ in range(iterations):
        q /= q.sum(1, keepdim=True) * num_protos
        q /= q.sum(0, keepdim=True) * num_samples
    return (q * num_samples).t()


class PrototypeClustering(nn.Module):
    """Anatomy prototypes with Sinkhorn assignment and swapped prediction between two views.

    Args:
        code_dim: ``D``.
        num_prototypes: number of learnable prototypes.
        temperature: softmax temperature of the prototype scores.
        eps, iterations: Sinkhorn regularisation and iterations.

    ``forward(codes1 (B, K+1, D), codes2 (B, K+1, D)) -> scalar``.
    """

    def __init__(self, *, code_dim: int = CODE_DIM, num_prototypes: int = NUM_PROTOTYPES,
                 temperature: float = 0.1, eps: float = 0.05, iterations: int = 3) -> None:
        super().__init__()
        if num_prototypes < MIN_PROTOTYPES or temperature <= 0 or eps <= 0 or iterations < 1:
            raise ConfigError(f"need num_prototypes >= {MIN_PROTOTYPES}, temperature > 0, eps > 0, "
                              "iterations >= 1")
        self.prototypes = nn.Linear(code_dim, num_prototypes, bias=False)
        self.temperature = temperature
        self.eps = eps
        self.iterations = iterations

    def forward(self, codes1: Tensor, codes2: Tensor) -> Tensor:
        weight = F.normalize(self.prototypes.weight, dim=1)
        s1 = F.normalize(codes1.flatten(0, 1), dim=1) @ weight.t()
        s2 = F.normalize(codes2.flatten(0, 1), dim=1) @ weight.t()
        q1 = sinkhorn(s1, eps=self.eps, iterations=self.iterations)
        q2 = sinkhorn(s2, eps=self.eps, iterations=self.iterations)
        swapped = -(q1 * F.log_softmax(s2 / self.temperature, 1)).sum(1).mean() \
                  - (q2 * F.log_softmax(s1 / self.temperature, 1)).sum(1).mean()
        consistency = sum(1 - F.cosine_similarity(c[:, -1], c[:, 1:-1].sum(1), dim=-1).mean()
                          for c in (codes1, codes2))
        return swapped / 2 + consistency / 2


class AnatomyClustering(nn.Module):
    """MedCL's anatomy-distribution clustering of two views' predictions.

    The anatomy maps of the ``2B`` views (views ``k`` and ``k + B`` come from source image ``k``)
    go through two projection heads: the *anatomy* codes ``(2B, K+1, D)`` give the global
    (batch) loss, the *individual* codes the local loss between the two views of each image.

    Args:
        clustering: ``"contrastive"`` (global centres + NT-Xent, the authors' code) or
            ``"prototype"`` (Sinkhorn prototypes for the global term, the paper's text).
        code_dim, head, head_grid, head_hidden: projection heads (:class:`AnatomyProjector`).
        input_size: ``(H, W)`` of the maps, needed by the ``"full"`` head.
        temperature: NT-Xent temperature of the local term.
        num_prototypes: prototypes of the ``"prototype"`` form.

    ``forward(probs (2B, K, H, W) probabilities) -> {"global": scalar, "local": scalar}``.
    """

    def __init__(self, *, clustering: str = "contrastive", code_dim: int = CODE_DIM,
                 head: str = HEAD_FORM, head_grid: int = HEAD_GRID, head_hidden: int = HEAD_HIDDEN,
                 input_size: tuple[int, int] | None = None, temperature: float = TEMPERATURE,
                 num_prototypes: int = NUM_PROTOTYPES) -> None:
        super().__init__()
        if clustering not in CLUSTERINGS:
            raise ConfigError(f"unknown clustering {clustering!r}; valid: {', '.join(CLUSTERINGS)}")
        heads = dict(code_dim=code_dim, form=head, grid=head_grid, hidden=head_hidden,
                     input_size=input_size)
        self.anatomy_head = AnatomyProjector(**heads)
        self.individual_head = AnatomyProjector(**heads)
        self.prototypes = (PrototypeClustering(code_dim=code_dim, num_prototypes=num_prototypes)
                           if clustering == "prototype" else None)
        self.temperature = temperature

    def forward(self, probs: Tensor) -> dict[str, Tensor]:
        if probs.dim() != 4 or probs.shape[0] % 2:
            raise ValueError(f"expected probs (2B, K, H, W) of two views, got {tuple(probs.shape)}")
        batch = probs.shape[0] // 2
        maps = anatomy_maps(probs)
        anatomy = self.anatomy_head(maps)
        individual = self.individual_head(maps)
        local = nt_xent(individual[:batch].flatten(1), individual[batch:].flatten(1),
                        temperature=self.temperature)
        if self.prototypes is not None:
            return {"global": self.prototypes(anatomy[:batch], anatomy[batch:]), "local": local}
        # the batch centres are computed over the global batch when training on several processes
        return {"global": global_cluster_loss(gather_with_grad(anatomy)), "local": local}
