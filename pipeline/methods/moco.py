"""MoCo v2: queries from the online net, keys from its EMA (the key encoder), negatives
from a queue of past keys."""

from __future__ import annotations

from torch.nn.parallel import DistributedDataParallel

from pipeline.losses.moco import MoCoLoss
from pipeline.methods.base import Step
from pipeline.methods.momentum import MomentumMethod
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import MoCoMethod


class MoCo(MomentumMethod):
    """Key encoder = EMA of encoder and projector (constant momentum by default). Its BN
    normalises over each worker's batch (neither Shuffle-BN nor SyncBN: SyncBN is applied
    to the trained networks only, as for BYOL's target)."""

    def __init__(self, encoder: Encoder, cfg: MoCoMethod):
        super().__init__(encoder, cfg.projector, cfg.base_momentum, cfg.momentum_schedule)
        self.criterion = MoCoLoss(cfg.projector.output_dim, cfg.queue_size, cfg.temperature)
        # Every rank enqueues the same gathered keys, so DDP need not broadcast the queue
        # from rank 0 before every forward pass (2 x queue_size x D floats per step).
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            self, ["criterion.queue", "criterion.queue_pointer"])

    def step(self, view1, view2, labels) -> Step:
        q1, q2 = self.project(view1, view2).chunk(2)
        f1, f2, k1, k2 = self.targets(view1, view2)
        return Step({"loss": self.criterion(q1, q2, k1, k2)}, q1, q2, f1, f2)
