"""Celery edges for billing: ids in, one service call. Every task is idempotent, so
late acknowledgement (settings: acks_late) can safely re-run one a dead worker held."""

from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.utils import timezone

from invoices import services


@shared_task
def start_due_billing_runs() -> int:
    return len(services.billing_runs_start_due(now=timezone.now()))


@shared_task(bind=True, max_retries=8)
def billing_run_process_chunks_task(self, *, chunks: list[list]) -> int:
    """`chunks`: [run id, lease ids] pairs, each billed in its own transaction. Only the
    chunks that failed are retried (with backoff); a retried chunk that had in fact been
    written is a no-op."""
    result = services.billing_run_process_chunks(
        chunks=[(run_id, lease_ids) for run_id, lease_ids in chunks]
    )
    if result.failed_chunks:
        raise self.retry(
            kwargs={"chunks": [[run_id, ids] for run_id, ids in result.failed_chunks]},
            exc=result.error,
            countdown=get_exponential_backoff_interval(
                factor=5, retries=self.request.retries, maximum=300, full_jitter=True
            ),
        )
    return result.created


# One chunk per task: what was queued before tasks carried several chunks.
@shared_task(autoretry_for=(Exception,), retry_backoff=5, retry_backoff_max=300, max_retries=8)
def billing_run_process_chunk_task(*, run_id: int, lease_ids: list[int]) -> int:
    return services.billing_run_process_chunk(run_id=run_id, lease_ids=lease_ids).created


@shared_task
def notifications_send(*, notification_ids: list[int]) -> int:
    from invoices import notifications

    return notifications.notifications_send(notification_ids=notification_ids, now=timezone.now())


@shared_task
def notifications_retry_due() -> int:
    from invoices import notifications

    return notifications.notifications_retry_due(now=timezone.now())
