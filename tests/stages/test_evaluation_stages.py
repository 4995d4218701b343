"""The evaluation stages end to end on real digits shards and untrained encoders: cached
features -> probe, transfer, geometry -> report; then `dvc metrics show` and `dvc plots
show`, whose HTML page is opened in headless Chromium to check that every plot renders.

No pretraining is needed: `random` runs are real encoders, untrained. Features are
extracted by Ray tasks on the session's cluster, which the stages' subprocesses join.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
RUNS = ("random", "random-e0b")
SEEDS = (0, 1)
# online linear top-1 per epoch written into the histories of run `random`, per seed
MONITORED = {0: {1: 0.5, 2: 0.7}, 1: {1: 0.6, 2: 0.8}}
# the scripts `dvc plots show` loads from a CDN, fetched from npm for an offline test
VEGA = {"vega@5.20.2": "vega.min.js", "vega-lite@5.2.0": "vega-lite.min.js",
        "vega-embed@6.18.2": "vega-embed.min.js"}


def params() -> dict:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    base = {"dataset": "digits", "backbone": {"name": "small_cnn", "width": 8},
            "method": {"name": "random"}, "train": {"epochs": 0}}
    data["seeds"] = list(SEEDS)
    data["report"] = {"control": ["random"], "comparisons": [["random-e0b", "random"]]}
    data["runs"] = {
        "random": base,
        "random-e0b": {**base, "backbone": {"name": "small_cnn", "width": 4},
                       "transfer": [{"dataset": "digits",
                                     "finetune": {"epochs": 5, "batch_size": 32, "lr": 3e-3}}]},
    }
    data["evaluate"]["geometry"].update(map_method="pca", max_points=300)
    data["evaluate"]["linear"].update(weight_decays=[1e-4, 1e-2], max_iter=100)
    return data


def stage(project: Path, module: str, *args: str, **extra_env: str
          ) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra_env}
    return subprocess.run([sys.executable, "-m", f"stages.{module}", *args], cwd=project,
                          env=env, capture_output=True, text=True, timeout=600)


def in_process(module: str, name: str) -> None:
    """Run a stage's `main` in this process, on its inputs as its command line reads them."""
    stage = importlib.import_module(f"stages.{module}")
    stage.main(*stage.STAGE.inputs(name))


@pytest.fixture(scope="module")
def project(tmp_path_factory, digits_shards: Path, ray_env: dict[str, str]) -> Path:
    """A DVC project with the repository's dvc.yaml, evaluated runs and their outputs."""
    from pipeline.io import write_tsv
    from pipeline.params.schema import validate_params

    project = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    (project / "params.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(params())),
                                                      sort_keys=False))  # no aliases
    (project / "data" / "shards").mkdir(parents=True)
    shutil.copytree(digits_shards, project / "data" / "shards" / "digits")
    # the stages' own entry points, in-process (one torch import instead of a dozen) ...
    with contextlib.chdir(project):
        importlib.import_module("stages.params").main(validate_params(params()))
        for name in RUNS:  # untrained: encoder, metrics and a history without Ray
            in_process("pretrain", name)
        for seed, monitored in MONITORED.items():  # as a monitored pretraining writes it
            write_tsv(f"plots/pretrain/random/seed_{seed}.tsv",
                      [{"epoch": e, "loss": 2.0 / e, "knn_top1": 0.5, "linear_top1": top1}
                       for e, top1 in monitored.items()],
                      ["epoch", "loss", "knn_top1", "linear_top1"])
        for name in RUNS[:-1]:
            for module in ("features", "probe", "transfer", "geometry"):
                in_process(module, name)
    # ... and through the command line DVC runs
    for module in ("features", "probe", "transfer", "geometry"):
        done = stage(project, module, RUNS[-1], **ray_env)
        assert done.returncode == 0, done.stderr
    done = stage(project, "report")
    assert done.returncode == 0, done.stderr
    return project


def test_features_are_cached_per_split_in_a_shard_per_input_shard(project: Path):
    from pipeline.data.reader import split_shards
    from pipeline.evaluate.features import load_features
    from pipeline.nets.backbones import load_encoder
    from pipeline.nets.extract import shard_features

    split = project / "features/random/seed_1/digits/train"
    features, labels = load_features(split)
    encoder = load_encoder(project / "models/random/seed_1/encoder.pt")
    shards, count, decoding = split_shards(project / "data/shards/digits", ["train"])
    assert features.shape == (count, encoder.feature_dim)
    manifest = json.loads((split / "manifest.json").read_text())
    assert [s["source"] for s in manifest["shards"]] == [Path(s.url).name for s in shards]
    assert sorted(p.name for p in split.iterdir()) == sorted(
        ["manifest.json", *(Path(s.url).stem + ".npz" for s in shards)])
    with np.load(split / manifest["shards"][0]["file"], allow_pickle=False) as first:
        assert first["features"].dtype == np.float32 and len(first["labels"]) == 500
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a 1-CPU Ray task computes
    try:
        batch = json.loads((project / "resolved/features/random.json").read_text())[
            "batch_size"]
        expected, expected_labels = shard_features(encoder, shards, decoding, batch, "cpu")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(features, expected) and torch.equal(labels, expected_labels)
    assert sorted(p.name for p in (project / "features/random").iterdir()) == [
        "seed_0", "seed_1"]
    assert sorted(p.name for p in (project / "features/random/seed_0/digits").iterdir()) == [
        "test", "train", "transfer_test", "transfer_train"]


def test_probe_and_transfer_metrics(project: Path):
    seeds = json.loads((project / "results/probe/random.json").read_text())
    assert list(seeds) == ["seed_0", "seed_1"]
    # different seeds: different untrained encoders
    assert seeds["seed_0"]["linear_top1"] != seeds["seed_1"]["linear_top1"]
    probe = seeds["seed_0"]
    # an untrained convnet on digits is far above chance (1/7) but not perfect
    assert 0.3 < probe["linear_top1"] <= probe["linear_top5"] <= 1.0
    assert probe["linear_weight_decay"] in (1e-4, 1e-2)
    for key in ("knn20_top1", "knn200_top1", "majority5nn_top1", "lowshot1pct_top1",
                "lowshot10pct_top1"):
        assert 0.14 < probe[key] <= 1.0, key
    transfer = json.loads((project / "results/transfer/random.json").read_text())["seed_1"]
    assert list(transfer) == ["digits_heldout"]  # the default target
    assert transfer["digits_heldout"]["num_classes"] == 3
    assert "finetune_top1" not in transfer["digits_heldout"]  # fine-tuning is off by default
    explicit = json.loads((project / "results/transfer/random-e0b.json").read_text())["seed_0"]
    assert list(explicit) == ["digits_heldout"]
    # fine-tuned through the command line, next to the frozen probes; 3 classes: chance 1/3
    assert explicit["digits_heldout"]["finetune_epochs"] == 5
    assert 0.8 < explicit["digits_heldout"]["finetune_top1"] <= 1.0
    assert "linear_top1" in explicit["digits_heldout"]


def test_geometry_metrics_and_plots(project: Path):
    geometry = json.loads((project / "results/geometry/random.json").read_text())["seed_1"]
    assert 0 <= geometry["alignment"] <= 4
    assert geometry["crowding_index"] > 0
    # label-free monitors of the untrained small_cnn (width 8: 32 features)
    assert 1 < geometry["rankme"] < 32 and 1 < geometry["lidar"] < 32
    assert 0 < geometry["alpha_req"] < 10 and 0 < geometry["feature_std"] < 32 ** -0.5
    # figures of the first seed only: the metrics are what seeds are compared on
    assert sorted(p.name for p in (project / "plots/geometry/random").iterdir()) == [
        "map.png", "similarity.png"]
    assert (project / "plots/geometry/random/map.png").stat().st_size > 1000
    assert (project / "plots/geometry/random/similarity.png").stat().st_size > 1000


def test_report_aggregates_seeds_and_compares_paired_runs(project: Path):
    per_seed = json.loads((project / "results/probe/random.json").read_text())
    headline = json.loads((project / "metrics/probe/random.json").read_text())
    assert headline["mean"]["linear_top1"] == pytest.approx(
        sum(v["linear_top1"] for v in per_seed.values()) / 2)
    assert {seed: set(values) for seed, values in headline.items()} == {
        key: {"linear_top1", "knn20_top1"} for key in ("seed_0", "seed_1", "mean")}
    geometry = json.loads((project / "metrics/geometry/random.json").read_text())
    assert set(geometry["mean"]) == {"crowding_index", "nc1", "rankme"}
    rows = list(csv.DictReader((project / "reports/runs.csv").open()))
    assert sorted((r["run"], r["seed"]) for r in rows) == sorted(
        (name, str(seed)) for name in RUNS for seed in SEEDS)
    comparisons = list(csv.DictReader((project / "reports/comparisons.csv").open()))
    listed = [r for r in comparisons if r["kind"] == "listed"]
    assert {r["metric"] for r in listed} == {"linear_top1", "knn20_top1", "crowding_index",
                                             "nc1", "reach_epochs"}
    verdicts = ("better", "worse", "no detectable difference")
    assert all(r["verdict"] in verdicts and r["verdict_holm"] in verdicts
               for r in listed if r["metric"] != "reach_epochs")
    markdown = (project / "reports/summary.md").read_text()
    assert "## digits" in markdown and "### Listed comparisons" in markdown
    assert (project / "reports/figures/efficiency_digits.png").read_bytes()[:4] == b"\x89PNG"
    assert (project / "reports/figures/comparisons_digits.png").read_bytes()[:4] == b"\x89PNG"


def test_report_draws_the_band_over_seeds_from_the_pretrain_history(project: Path):
    with (project / "reports/efficiency.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    curve = [(int(r["epoch"]), float(r["mean"]), float(r["min"]), float(r["max"]), r["seeds"])
             for r in rows if r["run"] == "random"]
    assert curve == [(1, pytest.approx(0.55), 0.5, 0.6, "2"),
                     (2, pytest.approx(0.75), 0.7, 0.8, "2")]
    assert not [r for r in rows if r["run"] == "random-e0b"]  # never monitored


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def dvc_project(project: Path) -> Path:
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    done = dvc(project, "init", "-q")
    assert done.returncode == 0, done.stderr
    return project


def test_dvc_metrics_show_lists_every_stage(dvc_project: Path):
    done = dvc(dvc_project, "metrics", "show", "--json")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for path in ("metrics/probe/random.json", "metrics/geometry/random.json",
                 "metrics/summary.json"):
        assert path in text
    assert "seed_1" in text and "train_seconds" not in text  # headlines, no timings


def vega_scripts(cache: Path) -> dict[str, Path]:
    """vega, vega-lite and vega-embed builds (`npm pack`), cached between runs."""
    found = {}
    for spec, build in VEGA.items():
        target = cache / spec / build
        if not target.is_file():
            if not shutil.which("npm"):
                pytest.skip("npm is absent: cannot fetch vega to render plots offline")
            (cache / spec).mkdir(parents=True, exist_ok=True)
            done = subprocess.run(["npm", "pack", spec, "--silent"], cwd=cache / spec,
                                  capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                pytest.skip(f"npm pack {spec} failed: {done.stderr.strip()[-200:]}")
            with tarfile.open(next((cache / spec).glob("*.tgz"))) as tar:
                member = tar.extractfile(f"package/build/{build}")
                target.write_bytes(member.read())
        found[spec] = target
    return found


def test_dvc_plots_show_renders_in_headless_chromium(dvc_project: Path, tmp_path: Path):
    done = dvc(dvc_project, "plots", "show", "--out", str(tmp_path / "plots"))
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "plots" / "index.html").read_text()
    # every plot of dvc.yaml is on the page: images for PNGs, vega specs for tables
    for name in ("plots_geometry_random_map.png", "plots_geometry_random_similarity.png",
                 "reports_figures_efficiency_digits.png",
                 "reports_figures_comparisons_digits.png",
                 "linear top-1 against pretraining epochs",  # the efficiency scatter's title
                 "plots_pretrain_random_seed_1_tsv",  # loss curves, one per seed
                 "plots_pretrain_random-e0b_seed_0_tsv"):
        assert name in page, name
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is absent (Debian: apt-get install -y chromium)")
    # the page loads vega from a CDN; point it at local copies, the page is otherwise as is
    scripts = vega_scripts(Path.home() / ".cache" / "ssl-pipeline" / "vega")
    for spec, path in scripts.items():
        page = page.replace(f"https://cdn.jsdelivr.net/npm/{spec}", path.as_uri())
    offline = tmp_path / "plots" / "offline.html"
    offline.write_text(page)
    profile = tmp_path / "chromium-profile"
    rendered = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--no-first-run", "--allow-file-access-from-files",
         f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom",
         offline.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    dom = rendered.stdout
    vega_divs = page.count("vegaEmbed(")
    assert vega_divs >= 1
    # vega-embed adds a `vega-embed` container with an <svg> or <canvas> per chart
    charts = len(re.findall(r'class="[^"]*vega-embed[^"]*"', dom))
    drawn = len(re.findall(r"<(svg|canvas)[\s>]", dom))
    assert charts == vega_divs, dom[:2000]
    assert drawn >= vega_divs
    images = re.findall(r"<img[^>]+src=\"([^\"]+)\"", dom)
    assert len(images) >= 2 * 2 + 2  # map + histograms per run, two report figures


def snapshot(project: Path) -> dict[str, bytes]:
    return {str(p.relative_to(project)): p.read_bytes()
            for root in ("reports", "metrics", "results") for p in (project / root).rglob("*")
            if p.is_file()}


@pytest.mark.parametrize(("broken", "content", "line"), [
    ("models/random/seed_1/prior.json", "[1, 2]", "prior.json: not a prior record"),
    ("results/geometry/random-e0b.json", "{", "random-e0b.json: not valid JSON"),
])
def test_report_validates_everything_before_it_writes(project: Path, broken: str,
                                                      content: str, line: str):
    path = project / broken
    saved = path.read_bytes() if path.exists() else None
    before = snapshot(project)
    try:
        path.write_text(content)
        done = stage(project, "report")
    finally:
        if saved is None:
            path.unlink()
        else:
            path.write_bytes(saved)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and line in lines[0] and "Traceback" not in done.stderr
    assert snapshot(project) == before  # nothing rewritten, nothing half-written
    assert not list((project / "reports").parent.glob(".reports.*"))
