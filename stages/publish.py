"""publish@<dataset>: -> data/published/<dataset>.json, the record of where the shards are
and their sha256, once the manifest the shard stage wrote to `datasets.<dataset>.publish.url`
(object storage that every node of a cluster reads) is the local one (`url: null`: not
published, stages read data/shards/<dataset>). Imports no torch: it costs a second."""

from __future__ import annotations

from pipeline.data.publish import published_record
from pipeline.data.storage import check_bucket
from pipeline.io import write_json
from pipeline.layout import published_record_path, shard_dir
from pipeline.resolved.publish import PublishParams
from stages._common import Stage, run_stage

STAGE = Stage("publish", PublishParams, item="datasets")


def main(params: PublishParams, name: str) -> None:
    record = {"url": None}
    if params.url is not None:
        key = f"datasets.{name}.publish.url"
        check_bucket(params.url, key)
        record = published_record(shard_dir(name), params.url, key)
        print(f"publish {name}: {len(record['files'])} shards and the manifest at {params.url}")
    write_json(published_record_path(name), record)


if __name__ == "__main__":
    run_stage(main, STAGE)
