"""The Celery app of the bench worker: the project's app and settings, except that

- the outbox sender (`notifications_send`, which renders a PDF per email) is routed to
  its own queue, which the bench worker does not consume. The billing run benchmark
  measures billing; sending 100,000 emails is the outbox's work and would otherwise
  share the two worker processes with the chunks;
- with `--db-reuse-max N` (an experiment, off by default), Celery's Django fixup keeps
  each worker process's database connection for N tasks instead of closing it around
  every task, which is what the project's settings do today.
"""

import os

from billing_site.celery import app

NOTIFICATIONS_QUEUE = "bench-notifications"

app.conf.task_routes = {"invoices.tasks.notifications_send": {"queue": NOTIFICATIONS_QUEUE}}
if os.environ.get("BENCH_DB_REUSE_MAX"):
    app.conf["CELERY_DB_REUSE_MAX"] = int(os.environ["BENCH_DB_REUSE_MAX"])

__all__ = ["app"]
