"""`views.multi_resolution` (views of different sizes) trains every method, with and
without DSA, in fp32 and under bf16 autocast."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter

from pipeline.data.views import make_views
from pipeline.methods import build_method
from pipeline.methods.base import encode_batches
from pipeline.nets.backbones import Encoder
from pipeline.params.methods import DSARegulator, Method, SmallCNNBackbone, ViewsConfig

# first view at half the side, second at full side: never the same size
VIEWS = ViewsConfig(multi_resolution=((0.5, 0.5), (1.0, 1.0)))


def _method(name: str, regulator: DSARegulator | None):
    extra = {"supervised": {}, "triplet": {"k": 3}}.get(name, {})
    if name != "supervised":
        extra["projector"] = {"hidden_dim": 32, "output_dim": 16}
    cfg = TypeAdapter(Method).validate_python({"name": name, **extra})
    encoder = Encoder(SmallCNNBackbone(name="small_cnn", width=4), 1, [0.5], [0.25])
    return build_method(cfg, encoder, 10, regulator)


def test_encode_batches_groups_same_sizes_and_keeps_order():
    calls = []

    def network(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x.mean(dim=(1, 2, 3))[:, None] + x.shape[-1]

    a, b, c = torch.rand(2, 1, 4, 4), torch.rand(3, 1, 8, 8), torch.rand(5, 1, 4, 4)
    outputs = encode_batches(network, a, b, c)
    assert sorted(calls) == [3, 7]  # a and c share a pass
    for batch, output in zip((a, b, c), outputs, strict=True):
        torch.testing.assert_close(output, network(batch))


CASES = [(name, None) for name in ("simclr", "byol", "triplet", "supervised")] + [
    (name, prior) for name in ("simclr", "byol", "triplet") for prior in ("auto", "fp32")]


@pytest.mark.parametrize(("name", "prior_precision"), CASES)
@pytest.mark.parametrize("bf16", [False, True])
def test_every_method_trains_on_views_of_different_sizes(name, prior_precision, bf16):
    torch.manual_seed(0)
    regulator = (None if prior_precision is None
                 else DSARegulator(name="dsa", k=5, prior_precision=prior_precision))
    method = _method(name, regulator)
    images = torch.rand(12, 1, 16, 16)
    view1, view2 = make_views(images, VIEWS, torch.Generator().manual_seed(0))
    assert view1.shape[-1] == 8 and view2.shape[-1] == 16
    labels = torch.randint(0, 10, (12,))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        outputs = method(view1, view2, labels, images)
    assert torch.isfinite(outputs["loss"])
    outputs["loss"].backward()
    assert method.encoder.backbone[0][0].weight.grad.abs().sum() > 0
    if regulator is not None:
        assert "dsa_weighted" in outputs
    method.after_optimizer_step(1, 10)
