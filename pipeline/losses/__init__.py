"""The methods' losses as small `nn.Module`s with plain arguments (lightly's style).

Each module imports only torch and `pipeline.distributed`, so a loss can be read, tested
and reused without the pipeline's params, networks or training loop. Every loss that
looks across the batch computes over the global batch of all workers (gathered embeddings
or all-reduced sums), so W workers compute what one worker with the whole batch would.
"""

from pipeline.losses.barlow_twins import BarlowTwinsLoss
from pipeline.losses.byol import BYOLLoss
from pipeline.losses.dsa import DSALoss
from pipeline.losses.moco import MoCoLoss
from pipeline.losses.ntxent import NTXentLoss
from pipeline.losses.triplet import TruncatedTripletLoss
from pipeline.losses.vicreg import VICRegLoss

__all__ = ["BYOLLoss", "BarlowTwinsLoss", "DSALoss", "MoCoLoss", "NTXentLoss",
           "TruncatedTripletLoss", "VICRegLoss"]
