import pytest
import torch

from pipeline.params.base import ParamsError
from pipeline.params.ray import RayConfig
from pipeline.params.training import RunConfig
from pipeline.train.checks import check_resources
from pipeline.train.launcher import pretrain, untrained_encoder


def tiny_run(method: dict, epochs: int = 2, regulator: dict | None = None) -> RunConfig:
    return RunConfig.model_validate({
        "regulator": regulator,
        "dataset": "digits", "seed": 3,
        "backbone": {"name": "small_cnn", "width": 4},
        "method": method,
        "train": {"epochs": epochs, "batch_size": 64,
                  "monitor": {"every_epochs": 5, "max_samples": 300}},  # the last epoch only
    })


SMALL_PROJECTOR = {"hidden_dim": 32, "output_dim": 16}
DSA = {"name": "dsa", "k": 5}


@pytest.mark.parametrize("method,regulator,workers", [
    pytest.param({"name": "simclr"}, None, 1, id="simclr"),
    pytest.param({"name": "supervised"}, None, 1, id="supervised"),
    pytest.param({"name": "byol"}, None, 1, id="byol"),
    pytest.param({"name": "triplet"}, None, 1, id="triplet"),
    pytest.param({"name": "simclr"}, DSA, 1, id="simclr_dsa"),
    # the newer bases, as small as they go, on 2 workers of 1 CPU each: a global batch of
    # 64 split in two; MoCo's queue holds 4 batches
    pytest.param({"name": "barlow_twins", "projector": SMALL_PROJECTOR}, None, 2,
                 id="barlow_twins_2w"),
    pytest.param({"name": "vicreg", "projector": SMALL_PROJECTOR}, DSA, 2, id="vicreg_dsa_2w"),
    pytest.param({"name": "moco", "projector": SMALL_PROJECTOR, "queue_size": 256}, DSA, 2,
                 id="moco_dsa_2w"),
])
def test_pretrain_on_a_real_ray_cluster(ray_cluster, digits_shards, tmp_path, method,
                                        regulator, workers):
    run = tiny_run(method, regulator=regulator)
    ray = RayConfig(storage_path=str(tmp_path), num_workers=workers, cpus_per_worker=1)
    result = pretrain("tiny", run, digits_shards, ray)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert all(("dsa_weighted" in row) == (regulator is not None) for row in result.history)
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)
    # online probes at monitored epochs only (every 5, and always the last)
    assert "linear_top1" not in result.history[0] and "knn_top1" not in result.history[0]
    assert 0.14 < result.history[1]["linear_top1"] <= 1.0  # above chance (1/7)
    assert 0.14 < result.history[1]["knn_top1"] <= 1.0
    # label-free monitors: RankMe and feature std with the probes, the collapse check's
    # statistics of the last batch every epoch (small_cnn width 4: D = 16)
    assert "rankme" not in result.history[0] and 1 <= result.history[1]["rankme"] <= 16
    assert 0 < result.history[1]["feature_std"] < 1
    assert all(1 <= row["batch_rankme"] <= 16 and 0 < row["batch_feature_std"] < 1
               for row in result.history)
    initial = untrained_encoder(run, digits_shards).state_dict()
    trained = result.encoder.state_dict()
    assert initial.keys() == trained.keys()
    assert any(not torch.equal(initial[k], trained[k]) for k in initial)


def test_resource_problems_name_the_key():
    with pytest.raises(ParamsError, match="ray.cpus_per_worker: 1 workers x 64 CPUs"):
        check_resources(RayConfig(cpus_per_worker=64))
    check_resources(RayConfig(address="auto", cpus_per_worker=64))  # a cluster's to judge


def test_monitor_probes_are_the_probes_on_the_same_features(digits_shards):
    """The online monitor is the evaluation's kNN and linear probe (fixed weight decay) on
    the first `max_samples` of train (bank) and test (queries), and RankMe and feature std
    of the same bank features, nothing of its own."""
    from pipeline.classify import knn_probe
    from pipeline.data.reader import read_split
    from pipeline.evaluate.probe import linear_probe
    from pipeline.nets.extract import extract_features
    from pipeline.spectrum import rankme, std_of_l2_normalized
    from pipeline.train.monitor import monitor_probes

    run = tiny_run({"name": "simclr"})
    cfg = run.train.monitor
    encoder = untrained_encoder(run, digits_shards)
    bank, queries = read_split(digits_shards, "train"), read_split(digits_shards, "test")
    found = monitor_probes(encoder, str(digits_shards), run, 64, torch.device("cpu"))
    assert encoder.training  # the monitor leaves the encoder as it found it
    bank_x = extract_features(encoder, bank.images[:300], 64, "cpu")
    query_x = extract_features(encoder, queries.images[:300], 64, "cpu")
    args = (bank_x, bank.labels[:300], query_x, queries.labels[:300])
    assert found == {
        "knn_top1": knn_probe(*args, cfg.k, cfg.temperature),
        "linear_top1": linear_probe(*args, (cfg.linear_weight_decay,),
                                    max_iter=cfg.linear_max_iter)["linear_top1"],
        "rankme": rankme(bank_x), "feature_std": std_of_l2_normalized(bank_x)}
