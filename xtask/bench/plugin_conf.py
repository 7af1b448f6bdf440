"""Gunicorn config for the gunicorn-prometheus-exporter 0.2.4 rows of `cargo xtask bench`,
as its README sets it up: its worker class comes from `-k` on the command line
(gunicorn_prometheus_exporter.PrometheusWorker or PrometheusThreadWorker), its
settings from the environment (PROMETHEUS_METRICS_PORT, PROMETHEUS_BIND_ADDRESS,
PROMETHEUS_MULTIPROC_DIR, GUNICORN_WORKERS; REDIS_ENABLED, REDIS_HOST, REDIS_PORT
for Redis mode)."""

import os

from gunicorn_prometheus_exporter.hooks import (
    default_on_exit,
    default_on_starting,
    default_post_fork,
    default_when_ready,
    default_worker_int,
    redis_when_ready,
)

_redis = os.environ.get("REDIS_ENABLED", "").lower() in ("1", "true", "yes", "on")

on_starting = default_on_starting
when_ready = redis_when_ready if _redis else default_when_ready
worker_int = default_worker_int
on_exit = default_on_exit
post_fork = default_post_fork
