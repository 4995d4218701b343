"""Feature extraction on Ray workers: one Ray task per shard, results in shard order.

Why Ray tasks over shards, not Ray Data: the unit of work is already the shard, read by
the bounded, sha256-checking reader (`pipeline.data.reader`) in fixed per-shard batches,
so a task per shard computes exactly the single-process path's batches, and the result is
the concatenation of the tasks' outputs in the order of the shard list: deterministic and
bitwise equal to `shard_features` on CPU, however many workers or nodes run it. Ray Data's
`read_webdataset` would read the tars with its own reader (no manifest digests, no
per-shard batches) and reorder blocks unless told not to. A task lost with its node is
retried elsewhere by Ray (`max_retries`) and, being a pure function of its shard,
returns the same features. The driver holds no images: only the features and labels each
task returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pipeline.data.codec import Decoding
from pipeline.data.reader import Shard
from pipeline.data.storage import ReadPolicy, configure_reads, read_policy
from pipeline.errors import UserError
from pipeline.nets.backbones import Encoder
from pipeline.nets.extract import shard_features

TASK_RETRIES = 3  # re-runs of a task whose worker or node died (not of user errors)


def _extract_shard(encoder: Encoder, shard: Shard, decoding: Decoding, batch_size: int,
                   use_gpu: bool, reads: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """One shard's features on the worker's device (its GPU when it was given one; Ray
    gives a 1-CPU task one thread), read with the driver's retry policy."""
    configure_reads(ReadPolicy(**reads))
    device = torch.device("cuda") if use_gpu else torch.device("cpu")
    return shard_features(encoder, [shard], decoding, batch_size, device)


def ray_shard_features(encoder: Encoder, shards: Sequence[Shard], decoding: Decoding,
                       batch_size: int = 512, use_gpu: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """`shard_features(encoder, shards, ...)` computed by one Ray task per shard on the
    connected cluster (1 CPU, or 1 GPU with `use_gpu`, per task), concatenated in order.

    A user error inside a task (a corrupt or unreachable shard) is raised here as itself,
    so the stage ends with its one line.
    """
    import ray

    task = ray.remote(num_cpus=1, num_gpus=1 if use_gpu else 0,
                      max_retries=TASK_RETRIES, retry_exceptions=False)(_extract_shard)
    encoder_ref = ray.put(encoder.cpu().eval())
    pending = [task.remote(encoder_ref, shard, decoding, batch_size, use_gpu, read_policy())
               for shard in shards]
    features, labels = [], []
    for ref in pending:
        try:
            shard_x, shard_y = ray.get(ref)
        except ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, UserError):
                raise error.cause from None
            raise
        features.append(shard_x)
        labels.append(shard_y)
    if not features:
        return torch.empty(0, encoder.feature_dim), torch.empty(0, dtype=torch.int64)
    return torch.cat(features), torch.cat(labels)
