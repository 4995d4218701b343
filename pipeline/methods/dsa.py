"""DSA, the Dynamic Semantic Adjuster (Song et al., 2024), as a regulator of any method.

SSL objectives say nothing about how *different* samples relate, so classes crowd. DSA
learns pair relations M in [0, 1] between embeddings of two views, kept close to prior
relations P from a frozen network, and uses them to pull (M > 0.5) or push (M < 0.5)
every pair, muting outliers by a good-neighbour score s. Fixes to the official code: the
cross-view relations use h^a_i - h^b_j (not same-view differences), M is a sigmoid on the
scale of P (official `row_l1` kept as an option), same-view self pairs are excluded.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import UserError
from pipeline.methods import dsa_cpu
from pipeline.methods.base import Method, Step
from pipeline.methods.ema import cosine_momentum, ema_update, frozen_copy
from pipeline.methods.pairwise_relu import PairwiseReLU
from pipeline.nets.backbones import load_encoder
from pipeline.params import DSARegulator, RunConfig
from pipeline.train.distributed import all_reduce_sum, gather, rank_and_world

BLOCKS = ((1, 1), (2, 2), (1, 2), (2, 1))
TORCHVISION_FILE = "resnet18-f37072fd.pth"  # torchvision's ImageNet ResNet-18 weights


def knn_indices(features: torch.Tensor, k: int) -> torch.Tensor:
    """[N, k]: the k most cosine-similar samples to each sample, itself excluded."""
    if not 0 < k < features.shape[0]:
        raise ValueError(f"k = {k} neighbours need a batch of more than k samples, "
                         f"got {features.shape[0]}")
    e = F.normalize(features, dim=1)
    similarity = (e @ e.T).fill_diagonal_(-float("inf"))
    return similarity.topk(k, dim=1, sorted=False).indices


@torch.no_grad()
def good_neighbour_scores(features: torch.Tensor, k: int = 20, mu: int = 1) -> torch.Tensor:
    """s_i = (1/k) |{j in N_k(i) : c_ij > mu}|, c_ij = |{l in N_k(j) : i in N_k(l)}|.

    c_ij is needed only for j in N_k(i): it counts the l in N_k(j) whose neighbours include
    i, so one gather of N k^2 entries from the transposed kNN adjacency gives every c_ij,
    where the official code loops over samples in Python (and the product A A would cost
    N^3). An outlier's neighbours do not reach back to it, so s_i is small.
    """
    neighbours = knn_indices(features.float(), k)
    n = len(neighbours)
    # reached_by[i, l] = [i in N_k(l)]: row i lists the samples that count i a neighbour
    reached_by = torch.zeros(n, n, dtype=torch.uint8, device=features.device)
    reached_by.scatter_(0, neighbours.T, 1)
    second = neighbours[neighbours].view(n, k * k)  # l in N_k(j) for each j in N_k(i)
    counts = reached_by.gather(1, second).view(n, k, k).sum(dim=2)  # c_ij, j in N_k(i)
    return (counts > mu).sum(dim=1).to(features.dtype) / k


def pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a_i - b_j|| for unit vectors, via the Gram matrix (no [n, N, D] tensor)."""
    return (2 - 2 * a @ b.T).clamp(min=1e-12).sqrt()


class RelationNet(nn.Module):
    """M_ij = MLP(h^a_i - h^b_j), hidden width = embedding size, for a whole block at once.

    The first layer is linear, so W (h^a_i - h^b_j) + c = (W h^a_i + c) - W h^b_j: one
    matrix product per side, then the ReLU and output layer on every pair (`PairwiseReLU`,
    fused into loops by `torch.compile`; on CPU `dsa_cpu` runs them as a C kernel).
    """

    def __init__(self, dim: int, norm: str = "sigmoid"):
        super().__init__()
        self.hidden = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, 1)
        self.norm = norm

    def forward(self, rows: torch.Tensor, columns: torch.Tensor, column_blocks: int = 1
                ) -> torch.Tensor:
        """[n, D] x [N, D] -> M [n, N] in [0, 1]; `row_l1` normalises each row within each
        of `column_blocks` equal blocks of columns (one block per view)."""
        a, b = self.hidden(rows), columns @ self.hidden.weight.T
        logits = PairwiseReLU.apply(a, b, self.out.weight.squeeze(0)) + self.out.bias
        if self.norm == "sigmoid":
            return torch.sigmoid(logits)
        positive = F.relu(logits).view(rows.shape[0], column_blocks, -1)
        positive = positive / positive.sum(dim=2, keepdim=True).clamp(min=1e-12)
        return positive.view(rows.shape[0], -1)  # official: ReLU, then rows sum to 1


def pair_terms(relation: RelationNet, rows_h: torch.Tensor, columns_h: torch.Tensor,
               rows_prior: torch.Tensor, columns_prior: torch.Tensor, s: torch.Tensor,
               offset: int, prior_temperature: float, temperature: float
               ) -> tuple[torch.Tensor, ...]:
    """DSA's sums over the [2n, 2N] pair matrix: rows (view a, local sample i), columns
    (view b, global sample j), the local samples at `offset` in the global batch.

    Returns the sum of L_w's terms (same-view self pairs excluded), sum (M - P)^2 per
    block [2, 2], and the mean M on positive and on negative pairs (no gradient). DSA runs
    it compiled (`compiled_pair_terms`): the relation MLP and the element-wise steps after
    it become a few fused loops, forward and backward, with no [n, N, D] tensor stored. On
    CPU, for sigmoid relations, `dsa_cpu.cpu_pair_terms` computes the same in C kernels.
    """
    n, size = rows_h.shape[0] // 2, columns_h.shape[0] // 2
    row = torch.arange(2 * n, device=rows_h.device)
    view, sample = row // n, row % n
    itself = view * size + offset + sample  # (a, i) against (a, i): not a pair
    partner = (1 - view) * size + offset + sample  # the positive pair, other view

    m = relation(rows_h, columns_h, column_blocks=2)
    pair = torch.arange(2 * size, device=rows_h.device) != itself[:, None]
    rows_e, columns_e = F.normalize(rows_prior, dim=1), F.normalize(columns_prior, dim=1)
    # a sample's prior distance to itself is exactly 0, which the Gram form approximates
    prior = torch.exp(-torch.where(pair, pairwise_distances(rows_e, columns_e), 0.0)
                      / prior_temperature)
    distance = pairwise_distances(F.normalize(rows_h, dim=1), F.normalize(columns_h, dim=1))
    weight = s.repeat(2)[:, None] * (2 * m - 1) / temperature  # s_i of the row's sample
    terms = torch.where(pair, torch.exp(weight * distance), 0.0)
    # per-block sums by slicing: through a view into [2, n, 2, N], inductor's backward
    # indexed every pair with integer divisions by the dynamic batch size (0.9 vs 0.46 ms)
    squares = (m - prior).pow(2)
    blocks = torch.stack([squares[:n, :size].sum(), squares[:n, size:].sum(),
                          squares[n:, :size].sum(), squares[n:, size:].sum()]).view(2, 2)

    m = m.detach()
    m_positive, m_itself = m[row, partner], m[row, itself]
    m_negative = (m.sum() - m_positive.sum() - m_itself.sum()) / (2 * n * (2 * size - 2))
    return terms.sum(), blocks, m_positive.mean(), m_negative


@functools.cache
def compiled_pair_terms() -> Callable[..., tuple[torch.Tensor, ...]]:
    """`pair_terms` compiled on first use, not at import: importing torch's compiler costs
    a process ~5 s, which stages that never run DSA should not pay."""
    return torch.compile(pair_terms, dynamic=True)


class TorchvisionPrior(nn.Module):
    """ImageNet-supervised ResNet-18 from local weights (the official prior; leaks labels)."""

    def __init__(self, weights: Path):
        import torchvision  # imported here: it costs every process ~2 s of start-up

        super().__init__()
        self.net = torchvision.models.resnet18(weights=None)
        self.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.net.fc = nn.Identity()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        if min(images.shape[-2:]) < 32:  # the ImageNet stem downsamples 32x
            images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
        return self.net((images - self.mean) / self.std)


def torchvision_weights(cfg: DSARegulator) -> Path:
    if cfg.prior_path:
        return Path(cfg.prior_path)
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE


def prior_file(run: RunConfig) -> Path | None:
    """The file a run's DSA prior is read from (None for the ema prior or no DSA)."""
    cfg = run.regulator
    if cfg is None or cfg.prior == "ema":
        return None
    return torchvision_weights(cfg) if cfg.prior == "torchvision" else Path(cfg.prior_path)


def with_absolute_prior_path(run: RunConfig) -> RunConfig:
    """The run with its prior file as an absolute path, for Ray workers: they do not start
    in the directory the stage runs in, where a relative `prior_path` was checked."""
    path = prior_file(run)
    if path is None:
        return run
    regulator = run.regulator.model_copy(update={"prior_path": str(path.resolve())})
    return run.model_copy(update={"regulator": regulator})


def check_prior(run_name: str, run: RunConfig) -> None:
    """Driver-side check, before any worker starts: the prior's file exists and fits."""
    path = prior_file(run)
    key = f"params.yaml: runs.{run_name}.regulator.prior_path"
    if path is None:
        return
    if run.regulator.prior == "torchvision":
        if not path.is_file():
            raise UserError(f"{key}: torchvision ResNet-18 weights not found at {path} "
                            "(nothing is downloaded at run time; place the file there)")
        return
    if not path.is_file():
        raise UserError(f"{key}: prior encoder {path} not found; run that run's pretrain "
                        "stage first")
    load_encoder(path)  # raises a UserError naming the file when it is not an encoder


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 in hardware (CUDA, or a CPU with AMX tiles)."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and torch.cpu._is_amx_tile_supported()


class DSA(nn.Module):
    """The regulator: L = L_base + lambda1 L_w + L_reg, with per-step diagnostics."""

    def __init__(self, cfg: DSARegulator, method: Method):
        super().__init__()
        if method.embedding_dim <= 0:
            raise ValueError(f"{type(method).__name__} has no embeddings for DSA to regulate")
        self.cfg = cfg
        self.relation = RelationNet(method.embedding_dim, cfg.relation_norm)
        self.prior: nn.Module | None = None
        if cfg.prior == "checkpoint":
            self.prior = frozen_copy(load_encoder(cfg.prior_path))
        elif cfg.prior == "torchvision":
            self.prior = frozen_copy(TorchvisionPrior(torchvision_weights(cfg)))
        elif method.target_encoder is None:
            self.prior = frozen_copy(method.encoder)  # an EMA of the online encoder

    @property
    def owns_ema(self) -> bool:
        return self.cfg.prior == "ema" and self.prior is not None

    def prior_in_bf16(self, device: torch.device) -> bool:
        precision = self.cfg.prior_precision
        return precision == "bf16" or (precision == "auto" and native_bf16(device))

    @torch.no_grad()
    def prior_features(self, method: Method, view1: torch.Tensor, view2: torch.Tensor,
                       original: torch.Tensor | None
                       ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """Prior features (fp32) of view 1, view 2 and the un-augmented images; the views'
        are None when they are the base method's target features, which its step computes.

        The pass carries no gradient and its features only enter exp(-d / tau_p) and kNN
        ranks, so bf16 costs little: on digits, P moves by at most 0.005. It is 3x faster
        on a CPU with AMX.
        """
        if original is None:
            raise ValueError("DSA needs the un-augmented batch (`original`)")
        device = original.device
        with torch.autocast(device.type, dtype=torch.bfloat16,
                            enabled=self.prior_in_bf16(device)):
            if self.prior is None:  # reuse the base method's EMA target
                return None, None, method.target_encoder(original).float()
            if not self.owns_ema:
                self.prior.eval()  # a fixed network: running BN statistics, always
            features = self.prior(torch.cat([view1, view2, original])).float()
        return features.chunk(3)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, prior1: torch.Tensor,
                prior2: torch.Tensor, prior0: torch.Tensor) -> dict[str, torch.Tensor]:
        """DSA's terms for the local rows against the gathered batch.

        `z1`, `z2` are the views' projected embeddings h [n, D] (with gradient); `prior*`
        the prior features of the views and of the un-augmented images (no gradient).
        Sums over the global batch are all-reduced, so W workers equal one worker.
        """
        cfg, n = self.cfg, z1.shape[0]
        rank, world = rank_and_world()
        gathered = cfg.gather_distributed and world > 1
        total = all_reduce_sum if gathered else (lambda x: x)
        offset = rank * n if gathered else 0

        # The four blocks (a, b) in {1, 2}^2 as one [2n, 2N] matrix: rows (view a, local i),
        # columns (view b, global j); one relation/distance pass instead of four.
        rows_h, rows_prior = torch.cat([z1, z2]), torch.cat([prior1, prior2])
        columns_h, columns_prior, batch_prior0 = rows_h, rows_prior, prior0
        if gathered:
            columns_h = torch.cat([gather(z1), gather(z2)])
            columns_prior = torch.cat([gather(prior1), gather(prior2)])
            batch_prior0 = gather(prior0)
        s = good_neighbour_scores(batch_prior0, cfg.k, cfg.mu)[offset:offset + n]

        cpu_kernels = dsa_cpu.supports(cfg.relation_norm, rows_h, columns_h, rows_prior,
                                       columns_prior, s)
        pair_sums = dsa_cpu.cpu_pair_terms if cpu_kernels else compiled_pair_terms()
        terms, squares, m_positive, m_negative = pair_sums(
            self.relation, rows_h, columns_h, rows_prior, columns_prior, s, offset,
            cfg.prior_temperature, cfg.temperature)
        size = columns_h.shape[0] // 2
        pairs = 4 * size * size - 2 * size
        weighted = torch.log1p(total(terms) / pairs)
        regulariser = cfg.lambda2 * total(squares).sqrt().sum() / len(BLOCKS)
        return {
            "dsa_loss": cfg.lambda1 * weighted + regulariser,
            "dsa_weighted": weighted.detach(),
            "dsa_regulariser": regulariser.detach(),
            "dsa_s_mean": s.mean(),
            "dsa_m_positive": m_positive,
            "dsa_m_negative": m_negative,
        }

    def regulate(self, step: Step, priors: tuple[torch.Tensor | None, ...]
                 ) -> dict[str, torch.Tensor]:
        """The base step's outputs with DSA's loss added and its diagnostics; `priors`
        from `prior_features`."""
        prior1, prior2, prior0 = priors
        if prior1 is None:
            prior1, prior2 = step.target1, step.target2
        terms = self.forward(step.z1, step.z2, prior1, prior2, prior0)
        outputs = dict(step.outputs)
        outputs["base_loss"] = outputs["loss"].detach()
        outputs["loss"] = outputs["loss"] + terms.pop("dsa_loss")
        outputs.update(terms)
        return outputs

    @torch.no_grad()
    def after_optimizer_step(self, method: Method, step: int, total_steps: int) -> None:
        if self.owns_ema:
            momentum = cosine_momentum(step, total_steps, self.cfg.prior_momentum)
            ema_update(self.prior, method.encoder, momentum)
