"""A regulator's prior: the fixed network whose features define prior relations, and the
record of the file it was read from.

Networks (`regulator.prior`): `ema` (an EMA of the online encoder, or the base method's
own EMA target when it has one), `checkpoint` (an encoder.pt of another run) and
`torchvision` (ImageNet-supervised ResNet-18 from local weights; it has seen labels).
A file prior is checked on the driver before any worker starts, handed to the workers as an
absolute path, and recorded with its sha256 (pipeline/prior_record.py), so that the report
can name the runs whose prior file changed after they trained.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.methods.base import Method, encode_batches
from pipeline.methods.ema import cosine_momentum, ema_update, frozen_copy
from pipeline.nets.backbones import load_encoder
from pipeline.params.base import ParamsError
from pipeline.params.methods import DSARegulator
from pipeline.params.training import RunConfig
from pipeline.precision import bf16_enabled

TORCHVISION_FILE = "resnet18-f37072fd.pth"  # torchvision's ImageNet ResNet-18 weights


class TorchvisionPrior(nn.Module):
    """ImageNet-supervised ResNet-18 from local weights (the official DSA prior)."""

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


class Prior(nn.Module):
    """The prior network of a run, run gradient-free in `prior_precision`."""

    def __init__(self, cfg: DSARegulator, method: Method):
        super().__init__()
        self.kind, self.precision = cfg.prior, cfg.prior_precision
        self.momentum = cfg.prior_momentum
        self.network: nn.Module | None = None  # None: the method's own EMA target
        if cfg.prior == "checkpoint":
            self.network = frozen_copy(load_encoder(cfg.prior_path))
        elif cfg.prior == "torchvision":
            self.network = frozen_copy(TorchvisionPrior(torchvision_weights(cfg)))
        elif method.target_encoder is None:
            self.network = frozen_copy(method.encoder)

    @torch.no_grad()
    def forward(self, method: Method, view1: torch.Tensor, view2: torch.Tensor,
                original: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """fp32 features of view 1, view 2 and the un-augmented images.

        With the method's target as the prior, the views' features are None: the method's
        step computes them. They are recomputed here only when fp32 is asked for while the
        step runs under (bf16) autocast.
        """
        device = original.device
        in_bf16 = bf16_enabled(self.precision, device)
        reuse_views = in_bf16 or not torch.is_autocast_enabled(device.type)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=in_bf16):
            if self.network is None and reuse_views:
                return None, None, method.target_encoder(original).float()
            network = method.target_encoder if self.network is None else self.network
            if self.kind != "ema":
                network.eval()  # a fixed network: running BN statistics, always
            return tuple(f.float() for f in encode_batches(network, view1, view2, original))

    @torch.no_grad()
    def after_optimizer_step(self, method: Method, step: int, total_steps: int) -> None:
        """Moves an own EMA prior towards the online encoder."""
        if self.kind == "ema" and self.network is not None:
            momentum = cosine_momentum(step, total_steps, self.momentum)
            ema_update(self.network, method.encoder, momentum)


def torchvision_weights(cfg: DSARegulator) -> Path:
    if cfg.prior_path:
        return Path(cfg.prior_path)
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE


def prior_file(run: RunConfig) -> Path | None:
    """The file a run's prior is read from (None for the ema prior or no regulator)."""
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
    key = f"runs.{run_name}.regulator.prior_path"
    if path is None:
        return
    if run.regulator.prior == "torchvision":
        if not path.is_file():
            raise ParamsError([(key, f"torchvision ResNet-18 weights not found at {path} "
                                     "(nothing is downloaded at run time; place the file "
                                     "there)")])
        return
    if not path.is_file():
        raise ParamsError([(key, f"prior encoder {path} not found; run that run's pretrain "
                                 "stage first")])
    load_encoder(path)  # raises a UserError naming the file when it is not an encoder
