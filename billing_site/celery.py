import os

from celery import Celery
from celery.signals import task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_site.settings")

app = Celery("billing_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The process-wide default, so task proxies used from other threads resolve to this app.
app.set_default()

# Keep a worker process's database connection across tasks instead of opening a new
# PostgreSQL backend for every chunk (measured: about a third of month-end CPU time).
# Celery's Django fixup reads this key; the health check below replaces what a fresh
# connection per task used to guarantee.
app.conf["CELERY_DB_REUSE_MAX"] = int(os.environ.get("CELERY_DB_REUSE_MAX", "200"))


@task_prerun.connect
def _drop_broken_or_old_connections(sender=None, **_kwargs) -> None:
    """Like Django does per request: close connections that are unusable or older than
    CONN_MAX_AGE, so a database restart costs one reconnect, not a failed task.
    Not for eager tasks: they run inside the caller's connection and transaction."""
    if sender is not None and getattr(sender.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
