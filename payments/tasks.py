"""Celery edges for payments: ids in, one service call. All idempotent (acks_late)."""

from celery import shared_task
from django.utils import timezone

from payments import services


@shared_task(autoretry_for=(Exception,), retry_backoff=5, retry_backoff_max=300, max_retries=5)
def stripe_event_process(*, event_id: str) -> str | None:
    # Handler errors are recorded on the event row, not raised; what reaches the
    # retry is an infrastructure failure (database down) before anything was written.
    event = services.stripe_event_process(event_id=event_id)
    return event.status if event else None


@shared_task(autoretry_for=(Exception,), retry_backoff=5, retry_backoff_max=300, max_retries=5)
def stripe_events_drain() -> int:
    # Every event is its own transaction; a retry after an infrastructure failure
    # starts again from the oldest event still received.
    return services.stripe_events_drain()


@shared_task
def stripe_events_sweep() -> int:
    return services.stripe_events_sweep(now=timezone.now())


@shared_task
def stripe_events_recover() -> int:
    return services.stripe_events_recover(now=timezone.now())


@shared_task
def tenant_credits_apply_due() -> int:
    return services.tenant_credits_apply_due(now=timezone.now())
