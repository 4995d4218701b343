"""What a checkpoint holds: the model, the optimiser, where training and its data stream
stand, and the history, written at epoch boundaries so that a resumed run continues bit
for bit (on CPU)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from ray.train import Checkpoint

from pipeline.data.batches import DataPosition
from pipeline.data.storage import read_bytes
from pipeline.errors import UserError
from pipeline.io import load_torch_bytes
from pipeline.methods import Method
from pipeline.nets.backbones import save_encoder

ENCODER_FILE = "encoder.pt"
HISTORY_FILE = "history.json"
STATE_FILE = "state.pt"
AFRESH = "delete the checkpoint's run directory to start afresh"


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


def load_state(checkpoint: Checkpoint, core: Method) -> tuple[Progress, dict[str, Any]]:
    """Load model weights (in place) and return the progress and optimizer state.

    Each file is read where the checkpoint lies (with the shard reader's retries), into
    this process only. Ray's `Checkpoint.as_directory` shares one download directory among
    the workers of a node, and a worker that comes late downloads again over the files
    another one is reading.
    """
    state_name = checkpoint_file(checkpoint, STATE_FILE)
    state = load_torch_bytes(read_bytes(state_name, capped=False), state_name)
    history_name = checkpoint_file(checkpoint, HISTORY_FILE)
    try:
        history = json.loads(read_bytes(history_name, capped=False))
    except ValueError:
        raise UserError(f"{history_name}: not JSON (corrupt); {AFRESH}") from None
    try:
        core.load_state_dict(state["model"])
        data = DataPosition(**state["data"]) if state.get("data") else None
        return Progress(state["epoch"], state["step"], history, data), state["optimizer"]
    except (KeyError, TypeError, RuntimeError) as exc:
        raise UserError(f"{state_name}: not a checkpoint of this run's model "
                        f"({type(exc).__name__}); {AFRESH}") from None


def checkpoint_file(checkpoint: Checkpoint, name: str) -> str:
    """A file of the checkpoint as users name it: a local path, or a URL (`s3://...`)."""
    path = f"{checkpoint.path}/{name}"
    scheme = checkpoint.filesystem.type_name
    return path if scheme == "local" else f"{scheme}://{path}"
