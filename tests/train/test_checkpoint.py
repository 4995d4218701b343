"""Loading a checkpoint on resume: from object storage without Ray's shared download
directory, and every unreadable file as one line naming it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from ray.air._internal.filelock import TempFileLock  # what as_directory locks
from ray.train import Checkpoint

from pipeline.errors import UserError
from pipeline.methods import build_method
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import SimCLRMethod, SmallCNNBackbone
from pipeline.train.checkpoint import HISTORY_FILE, STATE_FILE, Progress, load_state, save_state


def method(seed: int):
    torch.manual_seed(seed)
    encoder = Encoder(SmallCNNBackbone(name="small_cnn", width=4), 1, [0.5], [0.25])
    return build_method(SimCLRMethod(name="simclr"), encoder, 10, None)


def saved(directory: Path, epoch: int = 2) -> torch.nn.Module:
    directory.mkdir(exist_ok=True)
    trained = method(0)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
    history = [{"epoch": e, "loss": 1.0 / e} for e in range(1, epoch + 1)]
    save_state(directory, trained, optimizer, Progress(epoch, 3 * epoch, history))
    return trained


def test_a_node_sibling_rewriting_the_shared_download_does_not_reach_the_load(
        s3_server, bucket, tmp_path):
    """The race that broke a resume on the 3-node test cluster: Ray's `as_directory`
    downloads a remote checkpoint into one directory per node, and a worker that finds it
    locked (a sibling mid-download) reads whatever lies there once the lock is free. Here
    a sibling holds the lock over a half-written state file; the load reads S3 itself."""
    trained = saved(tmp_path / "local")
    for file in (tmp_path / "local").iterdir():
        s3_server.upload_file(str(file), bucket, f"run/epoch_2/{file.name}")
    checkpoint = Checkpoint(f"s3://{bucket}/run/epoch_2")
    shared = Path(checkpoint._get_temporary_checkpoint_dir())
    shared.mkdir(parents=True, exist_ok=True)
    (shared / STATE_FILE).write_bytes((tmp_path / "local" / STATE_FILE).read_bytes()[:1000])
    locked, done = threading.Event(), threading.Event()

    def sibling_downloading() -> None:  # holds the lock 0.5 s, then "finishes"
        with TempFileLock(str(shared), timeout=0):
            locked.set()
            done.wait(0.5)

    sibling = threading.Thread(target=sibling_downloading)
    sibling.start()
    locked.wait()
    try:
        resumed = method(1)
        progress, _ = load_state(checkpoint, resumed)
        assert sibling.is_alive(), "waited for the sibling's download"
    finally:
        done.set()
        sibling.join()
    assert (progress.epoch, progress.step, len(progress.history)) == (2, 6, 2)
    for name, tensor in trained.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: (d / STATE_FILE).write_bytes(b"PK\x03\x04 half a zip"),
     f"{STATE_FILE}: corrupt or truncated PyTorch file (unreadable zip archive)"),
    (lambda d: (d / HISTORY_FILE).write_text("[{"),
     f"{HISTORY_FILE}: not JSON (corrupt); delete the checkpoint's run directory to start "
     "afresh"),
    (lambda d: (d / HISTORY_FILE).unlink(), f"{HISTORY_FILE}: not found"),
], ids=["state", "history", "missing"])
def test_an_unreadable_checkpoint_is_one_line_naming_the_file(tmp_path, damage, message):
    saved(tmp_path)
    damage(tmp_path)
    with pytest.raises(UserError) as error:
        load_state(Checkpoint.from_directory(tmp_path), method(1))
    assert str(error.value) == f"{tmp_path}/{message}"


def test_a_checkpoint_of_another_model_names_the_state_file(tmp_path):
    saved(tmp_path)
    torch.manual_seed(0)
    encoder = Encoder(SmallCNNBackbone(name="small_cnn", width=8), 1, [0.5], [0.25])
    wider = build_method(SimCLRMethod(name="simclr"), encoder, 10, None)
    with pytest.raises(UserError, match=rf"^{tmp_path}/{STATE_FILE}: not a checkpoint of "
                                        r"this run's model \(RuntimeError\); delete"):
        load_state(Checkpoint.from_directory(tmp_path), wider)


def test_a_corrupt_checkpoint_in_object_storage_is_named_by_its_url(s3_server, bucket):
    s3_server.put_object(Bucket=bucket, Key=f"run/epoch_1/{STATE_FILE}", Body=b"\x00" * 64)
    with pytest.raises(UserError) as error:
        load_state(Checkpoint(f"s3://{bucket}/run/epoch_1"), method(1))
    assert str(error.value) == (f"s3://{bucket}/run/epoch_1/{STATE_FILE}: not a PyTorch file "
                                "(corrupt, or written by another program)")
