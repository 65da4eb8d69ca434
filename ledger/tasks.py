"""Celery edges for the ledger: ids in, one service call, idempotent."""

from celery import shared_task
from django.utils import timezone

from ledger import selectors, services
from ledger.models import LedgerCheckKind


@shared_task
def ledger_checks_run() -> int:
    """The nightly fan-out: one check task per landlord, so a long or failed check
    holds up no other, and a restart loses at most the checks in flight (the unique
    nightly row makes a redelivered one a no-op)."""
    landlord_ids = selectors.landlord_ids_to_check()
    for landlord_id in landlord_ids:
        ledger_check.delay(landlord_id=landlord_id)
    return len(landlord_ids)


@shared_task
def ledger_check(
    *, landlord_id: int, kind: str = LedgerCheckKind.NIGHTLY, requested_by_id: int | None = None
) -> bool | None:
    check = services.ledger_check_run(
        landlord_id=landlord_id, now=timezone.now(), kind=kind, requested_by_id=requested_by_id
    )
    return None if check is None else check.ok
