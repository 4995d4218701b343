"""Label-free quality monitors of the geometry stage: spectra of an embedding matrix
(methods.md); RankMe and the feature std, which pretraining monitors too, are in
pipeline/spectrum.py.

They need no labels, so they also run on unlabelled data. Every function
takes the raw embeddings Z [N, D] (backbone features unless stated), as their papers do,
and computes in float64. Non-finite embeddings (a diverging run) give NaN, never an error.
"""

from __future__ import annotations

import math

import torch

from pipeline.spectrum import all_finite, as_float64, entropy_rank

# alpha-ReQ fits ranks [first, last] of the positive spectrum (r eigenvalues): the top 1%
# (at least rank 1) is a few outsized directions, and the bottom half bends down (the
# finite-sample edge of the spectrum and the numerical floor), neither of them the decay.
ALPHA_SKIP_TOP = 0.01
ALPHA_KEEP_UP_TO = 0.5
LIDAR_RIDGE = 1e-4  # on Sigma_w, relative to the views' mean variance (scale-free)


def covariance_spectrum(z) -> torch.Tensor:
    """Eigenvalues of the embeddings' covariance, descending, numerical zeros dropped.

    From the singular values of the centred matrix (lambda_k = s_k^2 / (N - 1)); a value
    is zero below s_1 * max(N, D) * machine epsilon, the tolerance of `matrix_rank`.
    """
    x = as_float64(z)
    singular = torch.linalg.svdvals(x - x.mean(dim=0))
    if len(singular) == 0 or singular[0] == 0:
        return singular[:0]
    tolerance = singular[0] * max(x.shape) * torch.finfo(torch.float64).eps
    return singular[singular > tolerance].pow(2) / max(len(x) - 1, 1)


def alpha_fit_ranks(rank: int) -> tuple[int, int]:
    """The ranks [first, last] (1-based, inclusive) alpha-ReQ fits in a spectrum of `rank`
    positive eigenvalues: e.g. 2..32 of 64, 6..256 of 512 (ALPHA_SKIP_TOP, ALPHA_KEEP_UP_TO)."""
    first = max(2, math.ceil(ALPHA_SKIP_TOP * rank))
    return first, math.floor(ALPHA_KEEP_UP_TO * rank)


def alpha_req(z) -> float:
    """alpha-ReQ (Agrawal et al. 2022): the decay exponent alpha of the covariance spectrum,
    lambda_k ~ k^-alpha, as minus the least-squares slope of log lambda_k against log k over
    `alpha_fit_ranks`. Near 1 goes with good generalisation; larger is a faster decay
    (fewer directions used). NaN when fewer than 2 ranks are left to fit (the embeddings
    span fewer than 6 directions: RankMe tells that story)."""
    x = as_float64(z)
    if not all_finite(x):
        return math.nan
    spectrum = covariance_spectrum(x)
    first, last = alpha_fit_ranks(len(spectrum))
    if last - first < 1:
        return math.nan
    log_rank = torch.arange(first, last + 1, dtype=torch.float64).log()
    log_value = spectrum[first - 1:last].log()
    centred = log_rank - log_rank.mean()
    slope = (centred * (log_value - log_value.mean())).sum() / centred.pow(2).sum()
    return -float(slope)


def lidar(views) -> float:
    """LiDAR (Thilak et al. 2024): the smooth rank of Sigma_w^-1/2 Sigma_b Sigma_w^-1/2, the
    LDA matrix whose classes are the images and whose samples are their augmented views.

    `views` is [n, q, D]: q >= 2 views of each of n images. Sigma_b is the covariance of the
    n view means (1/(n-1)), Sigma_w the pooled covariance of views around their image's
    mean (1/(n(q-1))) plus a ridge of LIDAR_RIDGE times the mean variance (trace / D) of
    Sigma_w + Sigma_b, so the score does not depend on the embeddings' scale. 0 when every
    view is the same point.
    """
    x = as_float64(views)
    if not all_finite(x):
        return math.nan
    n, q, dim = x.shape
    means = x.mean(dim=1)
    centred_means = means - means.mean(dim=0)
    between = centred_means.T @ centred_means / max(n - 1, 1)
    spread = (x - means[:, None]).reshape(n * q, dim)
    within = spread.T @ spread / max(n * (q - 1), 1)
    scale = float(torch.trace(within) + torch.trace(between)) / dim
    if scale <= 0:
        return 0.0
    ridge = LIDAR_RIDGE * scale * torch.eye(dim, dtype=torch.float64)
    values, vectors = torch.linalg.eigh(within + ridge)
    whiten = vectors @ torch.diag(values.rsqrt()) @ vectors.T
    return entropy_rank(torch.linalg.eigvalsh(whiten @ between @ whiten).clamp(min=0))
