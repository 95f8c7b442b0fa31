"""The output's files: TFRecord shards of tf.train.Example (``tfrecord``), Parquet shards
(``parquet``), manifest.json and stats.json (``manifest``). They depend on the contract
(``pipeline.schema``) and the instance columns (``pipeline.core.instance``), not on the job."""
