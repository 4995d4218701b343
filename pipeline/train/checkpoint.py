"""What a checkpoint holds: the model, the optimiser, where training and its data stream
stand, and the history, written at epoch boundaries so that a resumed run continues bit
for bit (on CPU)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.data.batches import DataPosition
from pipeline.methods import Method
from pipeline.nets.backbones import save_encoder

ENCODER_FILE = "encoder.pt"
HISTORY_FILE = "history.json"
STATE_FILE = "state.pt"


@dataclass
class Progress:
    """Where training stands: completed epochs and steps, the per-epoch history and the
    data position (None before the first checkpoint, and in checkpoints older than it)."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    data: DataPosition | None = None


def save_state(directory: Path, core: Method, optimizer: torch.optim.Optimizer,
               progress: Progress) -> None:
    """Everything needed to continue exactly (the schedule is a function of the step)."""
    torch.save({"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": progress.epoch, "step": progress.step,
                "data": asdict(progress.data) if progress.data else None},
               directory / STATE_FILE)
    (directory / HISTORY_FILE).write_text(json.dumps(progress.history))
    save_encoder(core.encoder, directory / ENCODER_FILE)


def load_state(directory: Path, core: Method) -> tuple[Progress, dict[str, Any]]:
    """Load model weights (in place) and return the progress and optimizer state."""
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    core.load_state_dict(state["model"])
    history = json.loads((directory / HISTORY_FILE).read_text())
    data = DataPosition(**state["data"]) if state.get("data") else None
    return Progress(state["epoch"], state["step"], history, data), state["optimizer"]
