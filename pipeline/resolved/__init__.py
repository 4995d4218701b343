"""The params each stage reads, resolved with their defaults: one JSON file per stage and
name (resolved/<stage>/<name>.json), written by the `params` stage and read back by the
stage through its own typed model, one module per stage.

DVC compares params.yaml as written, so a key left to its default cannot be declared
(`Parameters '...' are missing`). Instead the `params` stage writes, for every stage of
every run, exactly the resolved params it reads, and each stage depends on its file: a
minimal params.yaml works, and editing one run changes only that run's files, so only
that run reruns. A stage's model imports only the schema sections it reads, so that an
edit to the evaluation or report schema does not make pretraining stale.
"""
