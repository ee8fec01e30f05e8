"""Distributed scanning: the scan of `pipelines.scan` run as Celery tasks on Redis, one task per
time chunk and stage, on any number of worker processes and machines, giving the same report as
the in-process scan. `worker.client` is the Python API (submit, status, result); `worker.app` is
the Celery application (`celery -A worker.app worker` or `incitescan worker`); `worker.tasks`
holds the thin tasks; `worker.state`, `worker.storage`, `worker.codec` and `worker.config` are
the Redis records, the shared media storage, JSON transport and the settings."""
