"""DSA's loss (Song et al., 2024): learned pair relations, kept close to prior relations,
pull (M > 0.5) or push (M < 0.5) every pair of embeddings; outliers are muted by a
good-neighbour score s. Fixes to the official code: the cross-view relations use
h^a_i - h^b_j (not same-view differences), M is a sigmoid on the scale of P (official
`row_l1` kept as an option), same-view self pairs are excluded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.distributed import all_reduce_sum, gather, rank_and_world
from pipeline.losses.pairwise_relu import PairwiseReLU
from pipeline.losses.precision import fp32_loss

BLOCKS = 4  # (view a, view b) in {1, 2}^2


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
    neighbours = knn_indices(features, k)
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
    matrix product per side, then the ReLU and output layer on every pair (`PairwiseReLU`).
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
    block [2, 2], and the mean M on positive and on negative pairs (no gradient).
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
    blocks = (m - prior).pow(2).view(2, n, 2, size).sum(dim=(1, 3))

    m = m.detach()
    m_positive, m_itself = m[row, partner], m[row, itself]
    m_negative = (m.sum() - m_positive.sum() - m_itself.sum()) / (2 * n * (2 * size - 2))
    return terms.sum(), blocks, m_positive.mean(), m_negative


class DSALoss(nn.Module):
    """L_DSA = lambda1 L_w + lambda2 mean over blocks ||M - P||_F, with its diagnostics.

    `forward` takes the views' projected embeddings h [n, D] (with gradient) and the prior
    features of the views and of the un-augmented images (no gradient), and returns `loss`
    plus logged terms. It runs in fp32 even under bf16 autocast: kNN ranks, distances near
    0 and exp(weight * d) are what bf16 rounds away. Sums over the global batch are
    all-reduced, so W workers equal one worker with the whole batch.
    """

    def __init__(self, embedding_dim: int, lambda1: float = 1.0, lambda2: float = 0.01,
                 prior_temperature: float = 0.5, temperature: float = 0.5, k: int = 20,
                 mu: int = 1, relation_norm: str = "sigmoid", gather_distributed: bool = True):
        super().__init__()
        self.relation = RelationNet(embedding_dim, relation_norm)
        self.lambda1, self.lambda2 = lambda1, lambda2
        self.prior_temperature, self.temperature = prior_temperature, temperature
        self.k, self.mu = k, mu
        self.gather_distributed = gather_distributed

    @fp32_loss
    def forward(self, z1: torch.Tensor, z2: torch.Tensor, prior1: torch.Tensor,
                prior2: torch.Tensor, prior0: torch.Tensor) -> dict[str, torch.Tensor]:
        n = z1.shape[0]
        rank, world = rank_and_world()
        gathered = self.gather_distributed and world > 1
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
        s = good_neighbour_scores(batch_prior0, self.k, self.mu)[offset:offset + n]
        terms, squares, m_positive, m_negative = pair_terms(
            self.relation, rows_h, columns_h, rows_prior, columns_prior, s, offset,
            self.prior_temperature, self.temperature)
        size = columns_h.shape[0] // 2
        pairs = 4 * size * size - 2 * size
        weighted = torch.log1p(total(terms) / pairs)
        regulariser = self.lambda2 * total(squares).sqrt().sum() / BLOCKS
        return {
            "loss": self.lambda1 * weighted + regulariser,
            "dsa_weighted": weighted.detach(),
            "dsa_regulariser": regulariser.detach(),
            "dsa_s_mean": s.mean(),
            "dsa_m_positive": m_positive,
            "dsa_m_negative": m_negative,
        }
