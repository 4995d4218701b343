"""publish@<dataset>: copy data/shards/<dataset> to `datasets.<dataset>.publish.url` (object
storage that every node of a cluster reads) -> data/published/<dataset>.json, the record of
where the shards went and their sha256 (`url: null`: not published, stages read the local
directory). Imports no torch: a dataset without `publish` costs this stage a second."""

from __future__ import annotations

from pipeline.data.publish import publish_shards
from pipeline.data.storage import check_bucket
from pipeline.io import write_json
from pipeline.layout import published_record_path, shard_dir
from pipeline.resolved.publish import PublishParams
from stages._common import Stage, run_stage

STAGE = Stage("publish", PublishParams, item="datasets")


def main(params: PublishParams, name: str) -> None:
    record = {"url": None}
    if params.url is not None:
        check_bucket(params.url, f"datasets.{name}.publish.url")
        record = publish_shards(shard_dir(name), params.url)
        print(f"publish {name}: {len(record['files'])} shards and the manifest -> {params.url}")
    write_json(published_record_path(name), record)


if __name__ == "__main__":
    run_stage(main, STAGE)
