import pytest
import torch

from pipeline.errors import UserError
from pipeline.params import RayConfig, RunConfig
from pipeline.train.launcher import check_resources, pretrain, untrained_encoder


def tiny_run(method: dict, epochs: int = 2, regulator: dict | None = None) -> RunConfig:
    return RunConfig.model_validate({
        "regulator": regulator,
        "dataset": "digits", "seed": 3,
        "backbone": {"name": "small_cnn", "width": 4},
        "method": method,
        "train": {"epochs": epochs, "batch_size": 64},
    })


@pytest.mark.parametrize("method,regulator", [
    ({"name": "simclr"}, None), ({"name": "supervised"}, None), ({"name": "byol"}, None),
    ({"name": "triplet"}, None), ({"name": "simclr"}, {"name": "dsa", "k": 5}),
])
def test_pretrain_on_a_real_ray_cluster(ray_cluster, digits_shards, tmp_path, method,
                                        regulator):
    run = tiny_run(method, regulator=regulator)
    result = pretrain("tiny", run, digits_shards, RayConfig(storage_path=str(tmp_path)))
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)
    initial = untrained_encoder(run, digits_shards).state_dict()
    trained = result.encoder.state_dict()
    assert initial.keys() == trained.keys()
    assert any(not torch.equal(initial[k], trained[k]) for k in initial)


def test_resource_problems_name_the_key():
    run = tiny_run({"name": "simclr"})
    with pytest.raises(UserError, match="ray.cpus_per_worker: 1 workers x 64 CPUs"):
        check_resources(RayConfig(cpus_per_worker=64), "tiny", run, 1000)
    with pytest.raises(UserError, match="runs.tiny.train.batch_size: 64 is not divisible"):
        check_resources(RayConfig(num_workers=3), "tiny", run, 1000)
    with pytest.raises(UserError, match="runs.tiny.train.batch_size: 64 is larger"):
        check_resources(RayConfig(), "tiny", run, 10)
