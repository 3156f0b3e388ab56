"""A trainable's data, preprocessed once and streamed, behind every run's ``preparing data`` line.

Modules: ``ingest`` (a trainable's rows preprocessed by Ray Data tasks), ``store`` (the preprocessed
shards and their manifest), ``stream`` (a rank's batches out of the store), ``locations`` (folders
and ``s3://`` alike), ``content_hash`` (data identified by its bytes) and ``cache`` (the platform's
cache folder).
"""
