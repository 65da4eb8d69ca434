"""Celery edges for the ledger: one service call each, idempotent."""

from celery import shared_task
from django.utils import timezone

from ledger import services


@shared_task
def ledger_checks_run() -> int:
    return services.ledger_checks_run(now=timezone.now())
