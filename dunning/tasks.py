"""Celery edge of dunning: one call into the engine, idempotent by construction."""

from celery import shared_task
from django.utils import timezone

from dunning import services


@shared_task
def dunning_tick() -> dict:
    result = services.dunning_tick(now=timezone.now())
    return {"invoices": result.invoices, **result.counts}
