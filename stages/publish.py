"""publish@<dataset>: copy data/shards/<dataset> to `datasets.<dataset>.publish.url` (object
storage that every node of a cluster reads) -> data/published/<dataset>.json, the record of
where the shards went and their sha256 (`url: null`: not published, stages read the local
directory). Imports no torch: a dataset without `publish` costs this stage a second."""

from __future__ import annotations

from pipeline.data.publish import publish_shards
from pipeline.data.storage import check_bucket
from pipeline.io import write_json
from pipeline.layout import published_record_path, shard_dir
from pipeline.params import Params
from stages._common import run_stage


def main(params: Params, name: str) -> None:
    publish = params.datasets[name].publish
    record = {"url": None}
    if publish is not None:
        check_bucket(publish.url, f"params.yaml: datasets.{name}.publish.url")
        record = publish_shards(shard_dir(name), publish.url)
        print(f"publish {name}: {len(record['files'])} shards and the manifest -> {publish.url}")
    write_json(published_record_path(name), record)


if __name__ == "__main__":
    run_stage(main, item="datasets")
