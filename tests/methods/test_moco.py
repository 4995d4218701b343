"""MoCo v2: InfoNCE against the paper's formula, the queue, the key encoder, a resume."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from ray.train import Checkpoint

from pipeline.losses.moco import MoCoLoss
from pipeline.methods import build_method
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import DSARegulator, MoCoMethod, SmallCNNBackbone
from pipeline.train.checkpoint import Progress, load_state, save_state


def reference_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float
                       ) -> torch.Tensor:
    """He et al. (2020), eq. 1, one query at a time: L_q = -log exp(q.k+ / t) /
    (exp(q.k+ / t) + sum_i exp(q.k_i / t)) over the queue's keys k_i; q, k unit vectors."""
    losses = []
    for i in range(len(q)):
        qi = q[i] / q[i].norm()
        positive = torch.exp(qi @ (k[i] / k[i].norm()) / t)
        negatives = sum(torch.exp(qi @ key / t) for key in queue)
        losses.append(-torch.log(positive / (positive + negatives)))
    return sum(losses) / len(losses)


def test_value_gradients_and_enqueue_match_the_formula():
    generator = torch.Generator().manual_seed(0)
    q1, q2, k1, k2 = (torch.randn(4, 6, generator=generator, dtype=torch.float64)
                      for _ in range(4))
    q1.requires_grad_(True)
    q2.requires_grad_(True)
    loss_module = MoCoLoss(6, queue_size=8, temperature=0.2).double()
    queue = loss_module.queue.clone()
    loss = loss_module(q1, q2, k1, k2)
    expected = (reference_info_nce(q1, k2, queue[1], 0.2)
                + reference_info_nce(q2, k1, queue[0], 0.2)) / 2
    torch.testing.assert_close(loss, expected)
    for got, want in zip(torch.autograd.grad(loss, (q1, q2)),
                         torch.autograd.grad(expected, (q1, q2)), strict=True):
        torch.testing.assert_close(got, want)
    # the batch's keys replaced the oldest 4 of each view's queue; the rest is unchanged
    torch.testing.assert_close(loss_module.queue[0, :4], F.normalize(k1, dim=1))
    torch.testing.assert_close(loss_module.queue[1, :4], F.normalize(k2, dim=1))
    torch.testing.assert_close(loss_module.queue[:, 4:], queue[:, 4:])
    assert int(loss_module.queue_pointer) == 4


def test_queue_wraps_around_and_rejects_a_batch_that_does_not_divide_it():
    loss_module = MoCoLoss(3, queue_size=6)
    for step in range(4):  # batch s holds 3 copies of the unit vector e_(s mod 3)
        keys = torch.eye(3)[step % 3].expand(3, 3)
        loss_module(torch.ones(3, 3), torch.ones(3, 3), keys, keys)
    assert int(loss_module.queue_pointer) == 0  # 4 batches of 3 in a queue of 6
    assert torch.equal(loss_module.queue[0, :3], torch.eye(3)[2].expand(3, 3))  # batch 2
    assert torch.equal(loss_module.queue[0, 3:], torch.eye(3)[0].expand(3, 3))  # batch 3
    try:
        loss_module(torch.ones(4, 3), torch.ones(4, 3), torch.ones(4, 3), torch.ones(4, 3))
    except ValueError as error:
        assert "not a multiple of the global batch 4" in str(error)
    else:
        raise AssertionError("a batch of 4 was enqueued in a queue of 6")


def moco(seed: int, **cfg) -> torch.nn.Module:
    torch.manual_seed(seed)
    encoder = Encoder(SmallCNNBackbone(name="small_cnn", width=4), 1, [0.5], [0.25])
    method_cfg = MoCoMethod(name="moco", queue_size=16, **cfg)
    return build_method(method_cfg, encoder, 3, DSARegulator(name="dsa", k=3))


def train_steps(method, optimizer, batches, start: int) -> list[float]:
    losses = []
    for step, x in enumerate(batches, start=start):
        outputs = method(x, x.flip(-1), None, x)
        optimizer.zero_grad()
        outputs["loss"].backward()
        optimizer.step()
        method.after_optimizer_step(step, 100)
        losses.append(outputs["loss"].item())
    return losses


def test_key_encoder_is_the_constant_momentum_ema_and_dsa_prior():
    method = moco(0, base_momentum=0.9)
    assert method.regulator.prior.network is None  # DSA reuses the key encoder
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in method.target.parameters()]
    method.after_optimizer_step(50, 100)  # constant: 0.9 at any step
    for old, new, online in zip(before, method.target.parameters(),
                                method.encoder.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * online)
    cosine = moco(0, base_momentum=0.9, momentum_schedule="cosine")
    before = [p.clone() for p in cosine.target.parameters()]
    cosine.after_optimizer_step(100, 100)  # cosine: momentum 1 at the last step
    assert all(torch.equal(a, b) for a, b in zip(before, cosine.target.parameters(),
                                                 strict=True))


def test_queue_survives_a_resume(tmp_path):
    """A checkpoint written by the loop's save_state holds the queue and its pointer: a
    method rebuilt with another seed and resumed from it continues bit for bit."""
    batches = [torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(i))
               for i in range(5)]
    method = moco(0)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    train_steps(method, optimizer, batches[:3], start=1)
    assert int(method.criterion.queue_pointer) == 8  # 3 batches of 8 in a queue of 16
    save_state(tmp_path, method, optimizer, Progress(epoch=1, step=3))

    resumed = moco(1)  # another seed: another initial queue and weights
    assert not torch.equal(resumed.criterion.queue, method.criterion.queue)
    progress, optimizer_state = load_state(Checkpoint.from_directory(tmp_path), resumed)
    resumed_optimizer = torch.optim.SGD(resumed.parameters(), lr=0.1)
    resumed_optimizer.load_state_dict(optimizer_state)
    assert torch.equal(resumed.criterion.queue, method.criterion.queue)
    assert int(resumed.criterion.queue_pointer) == 8 and progress.step == 3

    torch.manual_seed(7)
    continued = train_steps(method, optimizer, batches[3:], start=4)
    torch.manual_seed(7)
    assert train_steps(resumed, resumed_optimizer, batches[3:], start=4) == continued
    assert torch.equal(resumed.criterion.queue, method.criterion.queue)

