"""Invoice write actions: the monthly billing run, issuing, voiding, the outbox.

The billing run is set-based: a chunk of leases is loaded in a handful of queries,
billed in memory by `invoices.rules`, and written (invoices, lines, ledger postings,
outbox rows) with bulk statements in one transaction. Exactly-once comes from the
unique (lease, period_start) key: a chunk that runs twice finds its invoices already
there and writes nothing.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import partial
from itertools import zip_longest
from typing import NamedTuple

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef, Sum
from django.utils import timezone

from invoices import rules, selectors
from invoices.models import (
    BillingIssueKind,
    BillingRun,
    BillingRunIssue,
    BillingRunStatus,
    Channel,
    Invoice,
    InvoiceLine,
    InvoiceSettings,
    InvoiceState,
    MeterReading,
    Notification,
    NotificationStatus,
    TaxRate,
)
from invoices.selectors import leases_issued_by
from ledger import selectors as ledger_selectors
from ledger import services as ledger
from ledger.hashing import EntryContent
from ledger.models import AccountCode, LedgerEntry, LedgerTransaction, income_account_code
from ledger.services import prepared_cursor, prepared_rows
from money import rounding as money_rounding
from tenants import services as tenant_services
from tenants.models import (
    AuditEvent,
    Charge,
    ChargeFrequency,
    ChargeKind,
    Landlord,
    Lease,
    Tenant,
    Unit,
)
from tenants.services import audit

log = logging.getLogger(__name__)

CHUNK_SIZE = 1_000
DOCUMENT_KIND = "invoice"


@dataclass(frozen=True)
class ChunkResult:
    created: int
    skipped: int
    failed: int
    notification_ids: tuple[int, ...] = ()


def invoice_settings_get(*, landlord: Landlord) -> InvoiceSettings:
    settings_row, _ = InvoiceSettings.objects.get_or_create(landlord=landlord)
    return settings_row


def _without_invoice_or_issue(
    *, runs: dict[int, BillingRun], lease_ids: dict[int, list[int]]
) -> dict[int, list[int]]:
    """Per landlord, its `lease_ids` minus the leases that have their invoice for the
    month of the landlord's run (in `runs`) or an issue recorded in that run.

    One probe per lease into the unique (lease, period_start) index, whatever the
    statistics say. At the start of a month they know no invoice of the new month, so
    a plain `lease_id = ANY(...) AND period_start = ...` or an anti-join was planned as
    a scan of every invoice of the period (3 ms per chunk at 10% of a 100k run, growing
    with it; 33 ms for the anti-join). A LATERAL subquery with LIMIT is never flattened
    into a join: it is planned for one lease, where the unique index always wins.
    """
    every = [pk for ids in lease_ids.values() for pk in ids]
    if not every:
        return {landlord_id: [] for landlord_id in lease_ids}
    period_start = next(iter(runs.values())).period_start
    with prepared_cursor() as cursor:
        cursor.execute(
            # The predicate of the partial unique (lease, period) index, so it is used.
            "SELECT l.id, NULL::bigint FROM unnest(%s::bigint[]) AS l(id) CROSS JOIN LATERAL"
            " (SELECT FROM invoices_invoice i WHERE i.lease_id = l.id AND i.period_start = %s"
            " AND i.kind = 'rent' AND i.adjusts_id IS NULL LIMIT 1) AS invoiced"
            " UNION ALL "
            "SELECT lease_id, run_id FROM invoices_billingrunissue"
            " WHERE run_id = ANY(%s::bigint[]) AND lease_id = ANY(%s::bigint[])",
            [every, period_start, [run.pk for run in runs.values()], every],
            prepare=True,
        )
        done = cursor.fetchall()
    invoiced = {lease_id for lease_id, run_id in done if run_id is None}
    noted = {(run_id, lease_id) for lease_id, run_id in done if run_id is not None}
    return {
        landlord_id: [
            pk for pk in ids if pk not in invoiced and (runs[landlord_id].pk, pk) not in noted
        ]
        for landlord_id, ids in lease_ids.items()
    }


def _runs_get_or_create_locked(
    *,
    landlords: Sequence[Landlord],
    period_start: date,
    period_end: date,
    now: datetime,
    started_by: str,
) -> tuple[dict[int, BillingRun], set[int]]:
    """Each landlord's run of the month, locked until commit (in id order), and the
    landlords whose run this call created. A run this transaction has just inserted is
    invisible to everyone else until commit, so it needs no lock."""
    ids = [landlord.pk for landlord in landlords]
    locked = BillingRun.objects.select_for_update().filter(period_start=period_start)
    runs = {run.landlord_id: run for run in locked.filter(landlord_id__in=ids).order_by("pk")}
    missing = [landlord for landlord in landlords if landlord.pk not in runs]
    if not missing:
        return runs, set()
    new = [
        BillingRun(
            landlord=landlord,
            period_start=period_start,
            period_end=period_end,
            started_at=now,
            started_by=started_by,
        )
        for landlord in missing
    ]
    try:
        with transaction.atomic():
            BillingRun.objects.bulk_create(new)
    except IntegrityError:
        # A concurrent start created some of them: take them one by one, race-safe.
        created = set()
        for run in new:
            found, was_created = BillingRun.objects.get_or_create(
                landlord=run.landlord,
                period_start=period_start,
                defaults={"period_end": period_end, "started_at": now, "started_by": started_by},
            )
            if was_created:
                created.add(run.landlord_id)
            else:
                found = locked.get(pk=found.pk)
            runs[run.landlord_id] = found
        return runs, created
    runs.update((run.landlord_id, run) for run in new)
    return runs, {run.landlord_id for run in new}


class RunStart(NamedTuple):
    run: BillingRun
    chunks: list[list[int]]
    created: bool  # this start inserted the run (else it resumed the month's run)


def _runs_start(
    *,
    landlords: Sequence[Landlord],
    period_start: date,
    as_of: date,
    started_by: str,
    chunk_size: int,
    actor: AbstractBaseUser | None = None,
) -> list[RunStart]:
    """`billing_run_start` for several landlords and one month, in a constant number
    of statements (call inside a transaction). Returns a RunStart per landlord, in the
    order given. `actor` is the staff member who started it (None for the schedule)."""
    if not landlords:
        return []
    period_start, period_end = rules.billing_period(month=period_start)
    now = timezone.now()
    runs, created = _runs_get_or_create_locked(
        landlords=landlords,
        period_start=period_start,
        period_end=period_end,
        now=now,
        started_by=started_by,
    )
    candidates: dict[int, list[int]] = {landlord.pk: [] for landlord in landlords}
    due = leases_issued_by(
        Lease.objects.filter(landlord_id__in=list(candidates)),
        period_start=period_start,
        period_end=period_end,
        as_of=as_of,
    )
    _jit_off()
    for landlord_id, pk in due.order_by("landlord_id", "pk").values_list("landlord_id", "pk"):
        candidates[landlord_id].append(pk)
    lease_ids = _without_invoice_or_issue(runs=runs, lease_ids=candidates)
    resumed: dict[int, int] = {}
    finished: list[BillingRun] = []
    # The record `tenants.services.audit` appends, for every new run in one INSERT.
    AuditEvent.objects.bulk_create(
        AuditEvent(
            landlord=landlord,
            actor=actor,
            action="billing_run.start",
            object_type=BillingRun.__name__,
            object_id=str(runs[landlord.pk].pk),
            summary=f"Billing run {period_start:%Y-%m} started by {started_by}"[:300],
            data={},
        )
        for landlord in landlords
        if landlord.pk in created
    )
    for landlord in landlords:
        run = runs[landlord.pk]
        if lease_ids[landlord.pk]:
            # leases_due counts every lease the run has taken on, across resumptions.
            outstanding = max(run.leases_due - run.processed, 0)
            resumed[run.pk] = max(len(lease_ids[landlord.pk]) - outstanding, 0)
        elif run.status == BillingRunStatus.RUNNING and run.processed >= run.leases_due:
            finished.append(run)
    if resumed:
        _runs_resume(runs=runs, new_leases=resumed, now=now)
    if finished:
        _runs_finish(finished, now=now)
    return [
        RunStart(
            runs[landlord.pk],
            [
                lease_ids[landlord.pk][i : i + chunk_size]
                for i in range(0, len(lease_ids[landlord.pk]), chunk_size)
            ],
            landlord.pk in created,
        )
        for landlord in landlords
    ]


@transaction.atomic
def billing_run_start(
    *,
    landlord: Landlord,
    period_start: date,
    as_of: date,
    started_by: str = "schedule",
    chunk_size: int = CHUNK_SIZE,
) -> tuple[BillingRun, list[list[int]]]:
    """Start (or resume) the landlord's billing run for the month beginning `period_start`.

    Unique per (landlord, period): starting again returns the same run with the
    chunks of leases that are due by `as_of` and still have no invoice and no recorded
    issue — which is also how missed beat ticks and killed workers self-heal.
    The caller dispatches the chunks (synchronously or as Celery tasks on commit).
    """
    (started,) = _runs_start(
        landlords=[landlord],
        period_start=period_start,
        as_of=as_of,
        started_by=started_by,
        chunk_size=chunk_size,
    )
    return started.run, started.chunks


# Leases per Celery task. A chunk is one landlord's run, at most CHUNK_SIZE leases, in
# its own transaction; a task carries several chunks (of different runs) up to this many
# leases, so a month of a thousand 100-lease landlords is ~100 tasks, not 1,000 (each
# task pays a message, an ack and the connection health check).
TASK_LEASES = 1_000


def _chunks_pack(
    chunks: Iterable[tuple[int, Sequence[int]]], *, limit: int
) -> list[list[tuple[int, list[int]]]]:
    """(run id, lease ids) chunks, in order, grouped into tasks of at most `limit` leases
    (a bigger chunk is a task of its own)."""
    tasks: list[list[tuple[int, list[int]]]] = []
    current: list[tuple[int, list[int]]] = []
    size = 0
    for run_id, lease_ids in chunks:
        if current and size + len(lease_ids) > limit:
            tasks.append(current)
            current, size = [], 0
        current.append((run_id, list(lease_ids)))
        size += len(lease_ids)
    if current:
        tasks.append(current)
    return tasks


def _chunks_dispatch(chunks: Iterable[tuple[int, Sequence[int]]]) -> None:
    """Queue the chunks, TASK_LEASES leases per Celery task, once the transaction commits."""
    from invoices.tasks import billing_run_process_chunks_task

    for task_chunks in _chunks_pack(chunks, limit=TASK_LEASES):
        described = ", ".join(f"({run_id}, <{len(ids)} leases>)" for run_id, ids in task_chunks)
        billing_run_process_chunks_task.apply_async_on_commit(
            kwargs={"chunks": [[run_id, ids] for run_id, ids in task_chunks]},
            # What logs and monitors show, instead of a repr of every lease id (which
            # also cost more than the rest of publishing the task).
            kwargsrepr=f"{{'chunks': [{described}]}}",
        )


def billing_run_dispatch(*, run: BillingRun, chunks: Sequence[Sequence[int]]) -> None:
    """Queue the run's chunks as Celery tasks once the run row is committed."""
    _chunks_dispatch((run.pk, chunk) for chunk in chunks)


@transaction.atomic
def billing_run_start_now(
    *, landlord: Landlord, period_start: date, as_of: date, actor: AbstractBaseUser
) -> tuple[BillingRun, int]:
    """A staff member's "run billing now": start (or resume) the month's run and queue
    its chunks once committed. Returns the run and how many leases were queued.

    Who pressed it is on the activity log either way, in this transaction. A new run
    names them as its starter; a run that already existed (started by the schedule,
    say) and now bills more leases is restarted in their name, and the log entry keeps
    who and when it was first started.
    """
    started_by = actor.email or actor.get_username()
    _run_errors_retry(landlord=landlord, period_start=period_start)
    (started,) = _runs_start(
        landlords=[landlord],
        period_start=period_start,
        as_of=as_of,
        started_by=started_by,
        chunk_size=CHUNK_SIZE,
        actor=actor,
    )
    run, chunks = started.run, started.chunks
    leases = sum(len(chunk) for chunk in chunks)
    if not started.created:
        first_at = run.started_at.astimezone(landlord.tz)
        first = f"{first_at:%Y-%m-%d %H:%M} by {run.started_by or 'schedule'}"
        if chunks:
            run.started_at, run.started_by = timezone.now(), started_by
            run.save(update_fields=["started_at", "started_by", "updated_at"])
        audit(
            landlord=landlord,
            actor=actor,
            action="billing_run.resume",
            obj=run,
            summary=f"Billing run {run.period_start:%Y-%m} run again by {started_by}: "
            f"{leases} lease{'' if leases == 1 else 's'} to bill (first started {first})",
        )
    billing_run_dispatch(run=run, chunks=chunks)
    return run, leases


def _run_errors_retry(*, landlord: Landlord, period_start: date) -> None:
    """Forget the errors recorded in the landlord's run of the month, so starting it
    again bills those leases. An error is bad data the landlord must fix (decision
    0002); once fixed, "Run billing now" is how the month gets billed. The schedule
    does not retry them: every tick would fail the unfixed ones again. The run row is
    locked first, as its chunks lock it."""
    period_start, _period_end = rules.billing_period(month=period_start)
    run = (
        BillingRun.objects.select_for_update()
        .filter(landlord=landlord, period_start=period_start)
        .first()
    )
    if run is None:
        return
    retried, _by_model = BillingRunIssue.objects.filter(
        run=run, kind=BillingIssueKind.ERROR
    ).delete()
    if retried:
        BillingRun.objects.filter(pk=run.pk).update(
            failed=F("failed") - retried, leases_due=F("leases_due") - retried
        )


# Landlords started per transaction by the beat tick.
START_BATCH = 100


def billing_runs_start_due(*, now: datetime) -> list[BillingRun]:
    """The beat tick: for every landlord, bill the leases whose issue day has come in
    the landlord's own time zone. Re-running it is harmless (each start resumes the
    month's run) and it heals missed ticks and lost chunks.

    Set-based, so a tick over a thousand small landlords costs a few dozen statements,
    not a thousand transactions: landlords whose run of the month is finished and who
    have nothing left to bill are skipped (starting them would change nothing), and
    the others are started START_BATCH at a time, each batch in one transaction whose
    chunks are queued, interleaved across its landlords, when it commits. Each run is
    started exactly as `billing_run_start` would.
    """
    landlords = list(Landlord.objects.order_by("pk"))
    by_day: dict[date, list[Landlord]] = defaultdict(list)
    for landlord in landlords:
        by_day[now.astimezone(landlord.tz).date()].append(landlord)
    runs = []
    for today, group in by_day.items():
        settled = _settled_landlords(landlord_ids=[landlord.pk for landlord in group], today=today)
        pending = [landlord for landlord in group if landlord.pk not in settled]
        for start in range(0, len(pending), START_BATCH):
            with transaction.atomic():
                started = _runs_start(
                    landlords=pending[start : start + START_BATCH],
                    period_start=today.replace(day=1),
                    as_of=today,
                    started_by="schedule",
                    chunk_size=CHUNK_SIZE,
                )
                runs += [run for run, chunks, _created in started if chunks]
                # Round-robin over the batch's runs: one landlord's chunks serialise on
                # its run row, so two workers should rarely be handed two in a row.
                # Small landlords' chunks share tasks (TASK_LEASES leases each).
                _chunks_dispatch(
                    (run.pk, chunk)
                    for turn in zip_longest(
                        *([(run, c) for c in chunks] for run, chunks, _created in started)
                    )
                    for run, chunk in filter(None, turn)
                )
    return runs


def _settled_landlords(*, landlord_ids: Sequence[int], today: date) -> set[int]:
    """Of `landlord_ids`, those whose run of today's month exists, is not running, and
    who have no lease due by `today` without an invoice or a recorded issue."""
    period_start, period_end = rules.billing_period(month=today)
    settled = set(
        BillingRun.objects.filter(landlord_id__in=landlord_ids, period_start=period_start)
        .exclude(status=BillingRunStatus.RUNNING)
        .values_list("landlord_id", flat=True)
    )
    if not settled:
        return settled
    invoiced = Invoice.objects.filter(lease=OuterRef("pk"), period_start=period_start)
    noted = BillingRunIssue.objects.filter(
        run__landlord=OuterRef("landlord"), run__period_start=period_start, lease=OuterRef("pk")
    )
    due = leases_issued_by(
        Lease.objects.filter(landlord_id__in=settled),
        period_start=period_start,
        period_end=period_end,
        as_of=today,
    ).filter(~Exists(invoiced), ~Exists(noted))
    with transaction.atomic():
        _jit_off()
        return settled - set(due.values_list("landlord_id", flat=True).distinct())


def _jit_off() -> None:
    """No JIT for the rest of the transaction: `leases_issued_by`'s EXISTS for ended
    leases (evaluated only for those, after the OR's cheaper terms) make the planner's
    estimate for 100,000 leases a hundred times the real cost, past `jit_above_cost`,
    and compiling took longer than the query (0.25 to 0.5 s against 0.09 s; decision 0007)."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL jit = off")


def billing_run_execute(
    *,
    landlord: Landlord,
    period_start: date,
    as_of: date,
    started_by: str,
    on_schedule: bool = False,
) -> BillingRun:
    """Run one landlord's month synchronously (operators' command, tests, the demo):
    the same start and chunk code as the Celery path, called inline.

    An invoice written after its issue day is dated the day it is written (see
    `rules.invoice_lines_for`); `on_schedule=True` dates every invoice on its issue day
    instead, for building a past on purpose (importing history, the demo, tests)."""
    run, chunks = billing_run_start(
        landlord=landlord, period_start=period_start, as_of=as_of, started_by=started_by
    )
    for chunk in chunks:
        billing_run_process_chunk(run_id=run.pk, lease_ids=chunk, on_schedule=on_schedule)
    run.refresh_from_db()
    return run


# The run's counters change with UPDATE ... RETURNING, which refreshes them in memory
# in the same round trip (the ORM's update() + refresh_from_db() takes two).
_RUN_RETURNING = ("status", "leases_due", "invoices_created", "skipped", "failed", "finished_at")


def _runs_resume(*, runs: dict[int, BillingRun], new_leases: dict[int, int], now: datetime) -> None:
    """Running again, with `new_leases[run id]` more leases due."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE invoices_billingrun r SET leases_due = r.leases_due + v.n, status = %s,"
            " finished_at = NULL, updated_at = %s"
            " FROM unnest(%s::bigint[], %s::int[]) AS v(id, n) WHERE r.id = v.id"
            " RETURNING r.id, r.status, r.leases_due, r.invoices_created, r.skipped, r.failed,"
            " r.finished_at",
            [BillingRunStatus.RUNNING, now, list(new_leases), list(new_leases.values())],
        )
        by_pk = {run.pk: run for run in runs.values()}
        for pk, *values in cursor.fetchall():
            for name, value in zip(_RUN_RETURNING, values, strict=True):
                setattr(by_pk[pk], name, value)


def _runs_count(
    outcomes: dict[int, tuple[int, int, int]], *, runs: dict[int, BillingRun], now: datetime
) -> None:
    """Add each run's (created, skipped, failed) from a chunk to its counters
    (atomically, in the database), and finish the runs as `_runs_finish` does when that
    was their last lease: one statement for all of them, which refreshes `runs`."""
    ids = sorted(outcomes)
    with prepared_cursor() as cursor:
        cursor.execute(
            "UPDATE invoices_billingrun r SET invoices_created = r.invoices_created + v.created,"
            " skipped = r.skipped + v.skipped, failed = r.failed + v.failed,"
            " updated_at = %(now)s,"
            " status = CASE WHEN r.status <> %(running)s"
            " OR r.invoices_created + r.skipped + r.failed + v.done < r.leases_due THEN r.status"
            " WHEN EXISTS (SELECT 1 FROM invoices_invoice i"
            " WHERE i.billing_run_id = r.id AND i.state = %(draft)s) THEN %(review)s"
            " ELSE %(completed)s END,"
            " finished_at = CASE WHEN r.status = %(running)s"
            " AND r.invoices_created + r.skipped + r.failed + v.done >= r.leases_due"
            " THEN %(now)s ELSE r.finished_at END"
            " FROM unnest(%(ids)s::bigint[], %(created)s::int[], %(skipped)s::int[],"
            " %(failed)s::int[]) AS u(id, created, skipped, failed)"
            " CROSS JOIN LATERAL (SELECT u.created, u.skipped, u.failed,"
            " u.created + u.skipped + u.failed AS done) v"
            " WHERE r.id = u.id"
            " RETURNING r.id, r.status, r.leases_due, r.invoices_created, r.skipped, r.failed,"
            " r.finished_at",
            {
                "ids": ids,
                "created": [outcomes[pk][0] for pk in ids],
                "skipped": [outcomes[pk][1] for pk in ids],
                "failed": [outcomes[pk][2] for pk in ids],
                "now": now,
                "running": BillingRunStatus.RUNNING,
                "draft": InvoiceState.DRAFT,
                "review": BillingRunStatus.REVIEW,
                "completed": BillingRunStatus.COMPLETED,
            },
            prepare=True,
        )
        for pk, *values in cursor.fetchall():
            for name, value in zip(_RUN_RETURNING, values, strict=True):
                setattr(runs[pk], name, value)


def _runs_finish(runs: Sequence[BillingRun], *, now: datetime) -> None:
    """Completed, or waiting for review if the run left drafts (one statement)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE invoices_billingrun r SET status = CASE WHEN EXISTS ("
            "SELECT 1 FROM invoices_invoice i WHERE i.billing_run_id = r.id AND i.state = %s"
            ") THEN %s ELSE %s END, finished_at = %s, updated_at = %s"
            " WHERE r.id = ANY(%s) AND r.status = %s",
            [
                InvoiceState.DRAFT,
                BillingRunStatus.REVIEW,
                BillingRunStatus.COMPLETED,
                now,
                now,
                [run.pk for run in runs],
                BillingRunStatus.RUNNING,
            ],
        )


# Lease and charge columns the rules need, loaded as tuples (no model instances).
_LEASE_FIELDS = ("pk", "start_date", "end_date", "currency", "billing_day", "due_days", "unit_id")
_CHARGE_FIELDS = (
    "pk",
    "lease_id",
    "kind",
    "description",
    "amount_minor",
    "currency",
    "frequency",
    "start_date",
    "end_date",
)


def _columns(model, names: Sequence[str]) -> str:
    meta = model._meta
    return ", ".join(meta.pk.column if n == "pk" else meta.get_field(n).column for n in names)


def _select(model, names: Sequence[str]) -> str:
    """`SELECT <columns of the named fields> FROM <table>`: raw reads of the chunk, which
    cost a fraction of the ORM's query compilation (run 1,000 times at month end)."""
    return f"SELECT {_columns(model, names)} FROM {model._meta.db_table}"  # noqa: S608


# The chunk's leases and charges, with their landlord (each must be the landlord of the
# run that bills it), and every landlord's settings, tax rates and whether it has any
# meter reading: one statement each for all the runs of a task.
_LEASES_SQL = (
    f"{_select(Lease, ('landlord_id', *_LEASE_FIELDS))} WHERE id = ANY(%s::bigint[]) ORDER BY id"
)
_CHARGES_SQL = (
    f"{_select(Charge, ('landlord_id', *_CHARGE_FIELDS))}"
    " WHERE lease_id = ANY(%s::bigint[]) ORDER BY id"
)
_SETTINGS_FIELDS = [f.attname for f in InvoiceSettings._meta.concrete_fields]
_SETTINGS_SQL = (
    f"SELECT {_columns(InvoiceSettings, _SETTINGS_FIELDS)}, ARRAY(SELECT ARRAY[kind, rate_bp::text]"  # noqa: S608
    f" FROM {TaxRate._meta.db_table} t WHERE t.landlord_id = s.landlord_id),"
    f" EXISTS (SELECT 1 FROM {MeterReading._meta.db_table} m WHERE m.landlord_id = s.landlord_id)"
    f" FROM {InvoiceSettings._meta.db_table} s WHERE s.landlord_id = ANY(%s::bigint[])"
)


def _settings_and_tax_rates(
    landlords: Sequence[Landlord],
) -> dict[int, tuple[InvoiceSettings, dict[str, int], bool]]:
    """Per landlord: `invoice_settings_get`, `selectors.tax_rates` and whether it has
    any meter reading, in one round trip for all of them."""
    found = {}
    for *values, rates, has_meters in prepared_rows(
        _SETTINGS_SQL, [[owner.pk for owner in landlords]]
    ):
        settings_row = InvoiceSettings.from_db(connection.alias, _SETTINGS_FIELDS, values)
        found[settings_row.landlord_id] = (
            settings_row,
            {kind: int(rate) for kind, rate in rates or ()},
            has_meters,
        )
    for owner in landlords:
        if owner.pk not in found:  # the landlord's first run: create the settings row
            settings_row = invoice_settings_get(landlord=owner)
            found[owner.pk] = (settings_row, selectors.tax_rates(landlord=owner), True)
    return found


def _lease_terms(leases: Iterable[tuple], charges: Iterable[tuple]) -> dict[int, rules.LeaseTerms]:
    by_lease: dict[int, list[rules.ChargeTerms]] = defaultdict(list)
    for pk, lease_id, kind, description, amount, currency, frequency, start, end in charges:
        by_lease[lease_id].append(
            rules.ChargeTerms(
                charge_id=pk,
                kind=kind,
                description=description,
                amount_minor=amount,
                currency=currency,
                frequency=frequency,
                start_date=start,
                end_date=end,
            )
        )
    return {
        pk: rules.LeaseTerms(
            lease_id=pk,
            start_date=start,
            end_date=end,
            currency=currency,
            billing_day=billing_day,
            due_days=due_days,
            charges=tuple(by_lease.get(pk, ())),
        )
        for pk, start, end, currency, billing_day, due_days, _unit_id in leases
    }


# Advances (or creates) the (landlord, series, year) counter by `count` and locks its
# row until commit; returns the new last number.
_COUNTER_UPSERT = (
    "INSERT INTO invoices_invoicenumbercounter "
    "(landlord_id, series, year, last_number, created_at, updated_at) "
    "VALUES (%s, %s, %s, %s, now(), now()) "
    "ON CONFLICT (landlord_id, series, year) DO UPDATE "
    "SET last_number = invoices_invoicenumbercounter.last_number + EXCLUDED.last_number, "
    "updated_at = now() RETURNING last_number"
)


def _allocate_numbers(*, landlord: Landlord, series: str, year: int, count: int) -> list[str]:
    """`count` consecutive numbers, e.g. INV-2026-000123, from the locked counter row.

    The counter is created or advanced by one upsert inside the caller's transaction,
    which locks its row until commit: if the transaction rolls back, so do the numbers,
    and the series has no gaps.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _COUNTER_UPSERT,
            [landlord.pk, series, year, count],
        )
        last = cursor.fetchone()[0]
    return [f"{series}-{year}-{n:06d}" for n in range(last - count + 1, last + 1)]


def _numbers_by_issue_year(
    *, landlord: Landlord, series: str, dated: Sequence[tuple[int, date]]
) -> dict[int, str]:
    """Numbers for invoices (id, issue date), in the given order within each year: a
    number's year is its invoice's issue year, so a December invoice written on 2 January
    is INV-2027-…, in the series of the year it was issued in (decision 0020)."""
    numbers: dict[int, str] = {}
    for year in sorted({day.year for _pk, day in dated}):
        of_year = [pk for pk, day in dated if day.year == year]
        allocated = _allocate_numbers(
            landlord=landlord, series=series, year=year, count=len(of_year)
        )
        numbers.update(zip(of_year, allocated, strict=True))
    return numbers


def _allocate_numbers_and_ids(
    *, counters: Sequence[tuple[int, str, int, int]], invoices: int, notifications: int
) -> tuple[dict[tuple[int, int], list[str]], list[int], list[int]]:
    """For each (landlord id, series, year, count) of `counters`, `count` consecutive
    numbers as `_allocate_numbers` gives them, by (landlord id, year), plus `invoices`
    invoice ids and
    `notifications` outbox ids from the tables' sequences: one round trip.

    The counters are upserted in landlord order (so two callers lock them in the same
    order) and stay locked until commit. The ids are taken up front so invoices, lines,
    ledger entries and outbox rows can reference each other in one round of COPY; the
    sequence is looked up once per statement (a scalar subquery, an InitPlan), not per
    id: `nextval(pg_get_serial_sequence(...))` cost 4.7 µs an id, ten times the nextval.
    """
    counters = sorted(counters)
    with prepared_cursor() as cursor:
        cursor.execute(
            "WITH counter AS (INSERT INTO invoices_invoicenumbercounter"
            " (landlord_id, series, year, last_number, created_at, updated_at)"
            " SELECT v.landlord_id, v.series, v.year, v.n, now(), now()"
            " FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::int[])"
            " WITH ORDINALITY AS v(landlord_id, series, year, n, i) ORDER BY v.i"
            " ON CONFLICT (landlord_id, series, year) DO UPDATE"
            " SET last_number = invoices_invoicenumbercounter.last_number + EXCLUDED.last_number,"
            " updated_at = now() RETURNING landlord_id, year, last_number)"
            " SELECT ARRAY(SELECT ARRAY[landlord_id, year, last_number] FROM counter),"
            " ARRAY(SELECT nextval((SELECT pg_get_serial_sequence('invoices_invoice', 'id')::regclass))"
            " FROM generate_series(1, %s)),"
            " ARRAY(SELECT nextval((SELECT pg_get_serial_sequence('invoices_notification', 'id')::regclass))"
            " FROM generate_series(1, %s))",
            [*([c[i] for c in counters] for i in range(4)), invoices, notifications],
            prepare=True,
        )
        lasts, invoice_ids, notification_ids = cursor.fetchone()
    last_of = {(landlord_id, year): last for landlord_id, year, last in lasts or ()}
    numbers = {
        (landlord_id, year): [
            f"{series}-{year}-{n:06d}"
            for n in range(
                last_of[(landlord_id, year)] - count + 1, last_of[(landlord_id, year)] + 1
            )
        ]
        for landlord_id, series, year, count in counters
    }
    return numbers, list(invoice_ids or ()), list(notification_ids or ())


def _posting_plan(
    *, currency: str, tenant_id: int, total_minor: int, lines: Sequence[rules.LineDraft]
) -> list[tuple[ledger.AccountKey, int]]:
    """Issuing posts: debit the tenant's receivable, credit income per kind and tax payable."""
    credits: dict[str, int] = defaultdict(int)
    for line in lines:
        credits[income_account_code(line.kind)] += line.amount_minor
        credits[AccountCode.TAX_PAYABLE] += line.tax_minor
    plan = [(ledger.AccountKey(AccountCode.RECEIVABLE, currency, tenant_id), total_minor)]
    plan += [
        (ledger.AccountKey(code, currency), -amount)
        for code, amount in sorted(credits.items())
        if amount
    ]
    return plan


@dataclass(frozen=True, slots=True)
class _Issued:
    """What the ledger posting of one issued invoice needs."""

    invoice_id: int
    number: str
    lease_id: int
    tenant_id: int
    currency: str
    issue_date: date
    plan: list[tuple[ledger.AccountKey, int]]


def _ledger_specs(*, landlord: Landlord, issued: Sequence[_Issued]) -> list[ledger.TransactionSpec]:
    accounts = ledger.accounts_get_or_create(
        landlord=landlord, keys={key for i in issued for key, _amount in i.plan}
    )
    midnights: dict[date, datetime] = {}
    specs = []
    for i in issued:
        effective_at = midnights.get(i.issue_date)
        if effective_at is None:
            effective_at = midnights[i.issue_date] = landlord.day_start(i.issue_date)
        entries = tuple(
            ledger.EntrySpec(
                account=accounts[key],
                amount_minor=amount,
                currency=i.currency,
                tenant_id=i.tenant_id,
                lease_id=i.lease_id,
                document_kind=DOCUMENT_KIND,
                document_id=i.invoice_id,
            )
            for key, amount in i.plan
        )
        specs.append(
            ledger.TransactionSpec(
                idempotency_key=f"invoice:{i.invoice_id}:issue",
                effective_at=effective_at,
                description=f"Invoice {i.number}",
                entries=entries,
                document_kind=DOCUMENT_KIND,
                document_id=i.invoice_id,
            )
        )
    return specs


_RUN_FIELDS = [f.attname for f in BillingRun._meta.concrete_fields]
_LANDLORD_FIELDS = [f.attname for f in Landlord._meta.concrete_fields]
# `BillingRun.objects.select_for_update(of=("self",)).select_related("landlord")` for
# several runs, locked in id order, prepared instead of compiled and planned every time.
# Only the runs are locked: a chunk's writes take their landlord's key-share lock (the
# set-based references, billing_site.db_references), and locking the landlord rows
# themselves would block every other write of those landlords for the whole task.
_RUNS_LOCK_SQL = (
    f"SELECT {', '.join(f'r.{BillingRun._meta.get_field(n).column}' for n in _RUN_FIELDS)},"  # noqa: S608
    f" {', '.join(f'l.{Landlord._meta.get_field(n).column}' for n in _LANDLORD_FIELDS)}"
    f" FROM {BillingRun._meta.db_table} r JOIN {Landlord._meta.db_table} l"
    " ON l.id = r.landlord_id WHERE r.id = ANY(%s::bigint[]) ORDER BY r.id FOR UPDATE OF r"
)


def _runs_lock(run_ids: Sequence[int]) -> dict[int, BillingRun]:
    """The runs with their landlords, the run rows locked until commit, by id."""
    runs = {}
    for values in prepared_rows(_RUNS_LOCK_SQL, [sorted(set(run_ids))]):
        run = BillingRun.from_db(connection.alias, _RUN_FIELDS, values[: len(_RUN_FIELDS)])
        run.landlord = Landlord.from_db(
            connection.alias, _LANDLORD_FIELDS, values[len(_RUN_FIELDS) :]
        )
        runs[run.pk] = run
    missing = set(run_ids) - runs.keys()
    if missing:
        raise BillingRun.DoesNotExist(f"BillingRun {min(missing)} does not exist")
    return runs


@dataclass(frozen=True)
class ChunksResult:
    created: int
    # The chunks that raised (after their transaction rolled back), to retry, and the
    # first exception.
    failed_chunks: tuple[tuple[int, list[int]], ...] = ()
    error: Exception | None = None


def billing_run_process_chunks(*, chunks: Sequence[tuple[int, Sequence[int]]]) -> ChunksResult:
    """Several (run id, lease ids) chunks, usually of different landlords' runs (a task's
    worth of small landlords), billed together in one transaction by `_bill_chunks`:
    the statements of a chunk are the same for ten landlords as for one, so their fixed
    cost is paid once per task instead of once per landlord.

    If that transaction fails, each chunk is billed again in a transaction of its own
    (`billing_run_process_chunk`): a chunk that fails rolls back alone and is returned
    for a retry, the others go on. Their outbox rows are queued together once the work
    is done (fewer, fuller `notifications_send` tasks); rows whose task is lost are
    sent by the outbox sweep.
    """
    try:
        with transaction.atomic():
            return ChunksResult(_bill_chunks(chunks).created)
    except Exception as exc:
        if len(chunks) == 1:
            run_id, lease_ids = chunks[0]
            log.warning(
                "Billing chunk of run %s (%d leases) failed: %r", run_id, len(lease_ids), exc
            )
            return ChunksResult(0, ((run_id, list(lease_ids)),), exc)
        log.warning("Billing %d chunks together failed (%r): one by one", len(chunks), exc)
    created = 0
    notification_ids: list[int] = []
    failed: list[tuple[int, list[int]]] = []
    error: Exception | None = None
    try:
        for run_id, lease_ids in chunks:
            try:
                result = billing_run_process_chunk(
                    run_id=run_id, lease_ids=lease_ids, enqueue_notifications=False
                )
            except Exception as exc:
                log.warning(
                    "Billing chunk of run %s (%d leases) failed: %r", run_id, len(lease_ids), exc
                )
                failed.append((run_id, list(lease_ids)))
                error = error or exc
                continue
            created += result.created
            notification_ids += result.notification_ids
    finally:
        if notification_ids:
            transaction.on_commit(partial(_enqueue_notifications, notification_ids))
    return ChunksResult(created, tuple(failed), error)


@transaction.atomic
def billing_run_process_chunk(
    *,
    run_id: int,
    lease_ids: Sequence[int],
    enqueue_notifications: bool = True,
    on_schedule: bool = False,
) -> ChunkResult:
    """Bill one chunk of a run's leases: `_bill_chunks` for one chunk, in its own
    transaction. With `enqueue_notifications=False` the caller queues the result's
    `notification_ids` (after commit) instead of this function."""
    return _bill_chunks(
        [(run_id, lease_ids)],
        enqueue_notifications=enqueue_notifications,
        on_schedule=on_schedule,
    )


def _bill_chunks(
    chunks: Sequence[tuple[int, Sequence[int]]],
    *,
    enqueue_notifications: bool = True,
    on_schedule: bool = False,
) -> ChunkResult:
    """Bill (run id, lease ids) chunks inside the caller's transaction: invoices + lines +
    ledger + outbox, set-based, each statement covering every chunk.

    Idempotent: leases that already have their invoice for the period, or a recorded
    issue in the run, are left alone, so a retried or duplicated chunk creates nothing.
    The run rows are locked first, in id order: chunks of one landlord serialise (they
    share its invoice counter anyway), and a duplicate can never race its twin.
    Queues the outbox rows after commit unless `enqueue_notifications` is False.
    A late invoice is dated when written unless `on_schedule` (`billing_run_execute`).
    """
    wanted: dict[int, set[int]] = defaultdict(set)
    for run_id, lease_ids in chunks:
        wanted[run_id].update(lease_ids)
    runs = _runs_lock(list(wanted))
    by_period: dict[date, dict[int, BillingRun]] = defaultdict(dict)
    for run in runs.values():
        by_period[run.period_start][run.landlord_id] = run
    created = skipped = failed = 0
    notification_ids: list[int] = []
    for period_runs in by_period.values():
        result = _bill_runs(
            runs=period_runs,
            lease_ids={owner: sorted(wanted[run.pk]) for owner, run in period_runs.items()},
            on_schedule=on_schedule,
        )
        created += result.created
        skipped += result.skipped
        failed += result.failed
        notification_ids += result.notification_ids
    if notification_ids and enqueue_notifications:
        transaction.on_commit(lambda: _enqueue_notifications(notification_ids))
    return ChunkResult(created, skipped, failed, tuple(notification_ids))


@dataclass
class _RunWork:
    """One run's share of `_bill_runs`."""

    run: BillingRun
    settings_row: InvoiceSettings
    drafts: list[tuple[int, rules.InvoiceDraft]]
    issues: list[BillingRunIssue]


def _bill_runs(
    *, runs: dict[int, BillingRun], lease_ids: dict[int, list[int]], on_schedule: bool
) -> ChunkResult:
    """`_bill_chunks` for runs of one period (`runs` and `lease_ids` by landlord id)."""
    pending = _without_invoice_or_issue(runs=runs, lease_ids=lease_ids)
    every = [pk for ids in pending.values() for pk in ids]
    # Each lease and charge must be the landlord's whose run bills it.
    owner_of = {pk: owner for owner, ids in pending.items() for pk in ids}
    leases = [
        row[1:] for row in prepared_rows(_LEASES_SQL, [every]) if owner_of.get(row[1]) == row[0]
    ]
    if not leases:
        return ChunkResult(0, 0, 0)
    ids = [lease[0] for lease in leases]
    charges = [
        row[1:] for row in prepared_rows(_CHARGES_SQL, [ids]) if owner_of.get(row[2]) == row[0]
    ]
    terms = _lease_terms(leases, charges)
    # Only the lease's own one-off charges matter to the rules; most chunks have none.
    one_off_ids = [
        c.charge_id
        for lease_terms in terms.values()
        for c in lease_terms.charges
        if c.frequency == ChargeFrequency.ONE_OFF
    ]
    if one_off_ids:
        # Two months' runs may bill one lease at once (a late December beside the
        # January tick): the second waits here until the first commits, then reads the
        # lines it wrote, so a one-off is billed once. Only chunks with one-offs lock.
        _rows_lock(Charge, one_off_ids)
    billed_one_offs = (
        frozenset(
            InvoiceLine.objects.filter(invoice__lease_id__in=ids, charge_id__in=one_off_ids)
            .exclude(invoice__state=InvoiceState.VOID)
            .values_list("charge_id", flat=True)
        )
        if one_off_ids
        else frozenset()
    )
    owners = sorted({owner_of[pk] for pk in ids})
    settings = _settings_and_tax_rates([runs[owner].landlord for owner in owners])
    bill_to = _bill_to(ids)
    unit_of = {lease[0]: lease[-1] for lease in leases}
    meters: dict[int, dict[str, list[tuple]]] = {}
    for owner in owners:
        if settings[owner][2]:  # the landlord has meter readings
            run = runs[owner]
            unit_ids = sorted({unit_of[pk] for pk in ids if owner_of[pk] == owner})
            # As for one-offs: two months' chunks of one unit take turns, so the second
            # starts from the readings the first billed up to (decision 0019).
            _rows_lock(Unit, unit_ids)
            ends: dict[int, date] = {}
            for lease_id in ids:
                end = terms[lease_id].end_date
                if owner_of[lease_id] == owner and end is not None:
                    unit_id = unit_of[lease_id]
                    ends[unit_id] = min(end, ends.get(unit_id, end))
            meters |= _meter_readings(
                landlord=run.landlord, unit_ids=unit_ids, period_end=run.period_end, ends=ends
            )

    work = {
        owner: _RunWork(run=runs[owner], settings_row=settings[owner][0], drafts=[], issues=[])
        for owner in owners
    }
    # Each landlord's local date now: a late invoice is dated when it is written.
    now = timezone.now()
    issued_on = {
        owner: None if on_schedule else timezone.localdate(now, runs[owner].landlord.tz)
        for owner in owners
    }
    for lease_id in ids:
        owner = owner_of[lease_id]
        item, tax_rates = work[owner], settings[owner][1]
        run = item.run
        extra: tuple[rules.LineDraft, ...] | rules.BillingError = ()
        usage = _meter_usage(meters.get(unit_of[lease_id], {}), lease=terms[lease_id])
        if usage:
            extra = rules.utility_lines_from_readings(
                readings=usage,
                service_start=run.period_start,
                service_end=run.period_end,
                tax_rates=tax_rates,
            )
        if isinstance(extra, rules.BillingError):
            outcome = extra
        else:
            outcome = rules.invoice_lines_for(
                lease=terms[lease_id],
                period_start=run.period_start,
                period_end=run.period_end,
                tax_rates=tax_rates,
                already_billed_one_off_ids=billed_one_offs,
                extra_lines=extra,
                issued_on=issued_on[owner],
            )
        if isinstance(outcome, rules.BillingSkip):
            item.issues.append(
                BillingRunIssue(
                    run=run,
                    lease_id=lease_id,
                    kind=BillingIssueKind.SKIPPED,
                    message=outcome.reason,
                )
            )
        elif isinstance(outcome, rules.BillingError):
            item.issues.append(
                BillingRunIssue(
                    run=run, lease_id=lease_id, kind=BillingIssueKind.ERROR, message=outcome.message
                )
            )
        elif lease_id not in bill_to:
            item.issues.append(
                BillingRunIssue(
                    run=run,
                    lease_id=lease_id,
                    kind=BillingIssueKind.ERROR,
                    message="Lease has no tenant to bill",
                )
            )
        else:
            item.drafts.append((lease_id, outcome))

    items = [work[owner] for owner in owners]
    created_by_run, notification_ids = _write_invoices(items=items, bill_to=bill_to)
    issues = [issue for item in items for issue in item.issues]
    if issues:
        BillingRunIssue.objects.bulk_create(issues, ignore_conflicts=True)
    outcomes = {}
    for item in items:
        skipped = sum(1 for i in item.issues if i.kind == BillingIssueKind.SKIPPED)
        outcomes[item.run.pk] = (
            created_by_run.get(item.run.pk, 0),
            skipped,
            len(item.issues) - skipped,
        )
    _runs_count(outcomes, runs={run.pk: run for run in runs.values()}, now=timezone.now())
    return ChunkResult(
        sum(o[0] for o in outcomes.values()),
        sum(o[1] for o in outcomes.values()),
        sum(o[2] for o in outcomes.values()),
        tuple(notification_ids),
    )


def _rows_lock(model, ids: Sequence[int]) -> None:
    """Lock `model`'s rows `ids` for this transaction, in id order (so two lockers never
    deadlock). NO KEY UPDATE: rows referencing them (a reading of a unit) can still be
    written meanwhile; another chunk locking the same rows waits."""
    list(
        model._base_manager.filter(pk__in=ids)
        .order_by("pk")
        .select_for_update(no_key=True)
        .values_list("pk", flat=True)
    )


def _meter_readings(
    *,
    landlord: Landlord,
    unit_ids: Sequence[int],
    period_end: date,
    ends: Mapping[int, date] | None = None,
) -> dict[int, dict[str, list[tuple]]]:
    """Per unit and meter, the readings not billed yet, oldest first, in one query:
    from the latest reading a standing (not void) invoice line billed up to, or, for a
    meter never billed, from its first reading, up to the last one dated before
    `period_end`. `_meter_usage` turns them into each lease's usage.

    Usage is billed in arrears from the last billed reading, not from the month's start:
    a reading dated in a month already billed but entered afterwards (read on the 30th,
    typed in on the 3rd) is billed on the next invoice instead of falling between two
    months.

    `ends` (unit id -> the earliest end date of the leases billed on it that have one)
    keeps, for a lease that ended, the readings from the latest one billed up to its
    end: the next tenant's bill, written first (another chunk), went past its move-out
    reading, and from there on its usage up to that reading would be on no invoice.
    Each row ends with whether a standing line billed up to it (`_meter_usage`).
    """
    if not unit_ids:
        return {}
    ends = ends or {}
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH billed AS ("
            " SELECT DISTINCT r.id, r.unit_id, r.meter, r.reading_date"
            " FROM invoices_meterreading r"
            " JOIN invoices_invoiceline l ON l.meter_reading_id = r.id"
            " JOIN invoices_invoice i ON i.id = l.invoice_id"
            " WHERE r.landlord_id = %s AND r.unit_id = ANY(%s::bigint[])"
            " AND i.landlord_id = %s AND i.state <> %s),"
            " cut AS (SELECT * FROM unnest(%s::bigint[], %s::date[]) AS c(unit_id, until)),"
            " start AS (SELECT b.unit_id, b.meter, max(b.reading_date) AS upto"
            " FROM billed b JOIN cut c ON c.unit_id = b.unit_id"
            " WHERE c.until IS NULL OR b.reading_date <= c.until"
            " GROUP BY b.unit_id, b.meter)"
            " SELECT m.id, m.unit_id, m.meter, m.reading_date, m.value, m.rate_minor_per_unit,"
            " m.id IN (SELECT b.id FROM billed b)"
            " FROM invoices_meterreading m"
            " LEFT JOIN start s ON s.unit_id = m.unit_id AND s.meter = m.meter"
            " WHERE m.landlord_id = %s AND m.unit_id = ANY(%s::bigint[])"
            " AND m.reading_date < %s AND (s.upto IS NULL OR m.reading_date >= s.upto)",
            [landlord.pk, list(unit_ids), landlord.pk, InvoiceState.VOID]
            + [list(unit_ids), [ends.get(pk) for pk in unit_ids]]
            + [landlord.pk, list(unit_ids), period_end],
        )
        rows = cursor.fetchall()
    out: dict[int, dict[str, list[tuple]]] = defaultdict(lambda: defaultdict(list))
    for row in sorted(rows, key=lambda r: (r[1], r[2], r[3])):
        out[row[1]][row[2]].append(row)
    return out


def _meter_usage(
    by_meter: dict[str, list[tuple]], *, lease: rules.LeaseTerms
) -> list[rules.MeterReadings]:
    """The lease's usage of its unit's meters (`_meter_readings` rows).

    A meter's usage runs from the latest reading billed up to within the lease's dates
    (or its first one) to its latest, priced at that latest reading's rate. A reading
    priced at 0 before the latest ends what was consumed for nothing: no line bills it,
    and a rate set later does not price it. A unit let to two leases in turn has its
    meters read at the changeover: each lease's usage runs only between readings within
    its own dates (a reading on the changeover day ends one and starts the other), so
    no unit consumed is billed to both, and what was consumed before a move-in is not
    the new tenant's. A meter whose readings go down anywhere on the way is passed as
    that decreasing pair, so the rules report it instead of billing a netted figure.
    """
    usage = []
    for meter, readings in sorted(by_meter.items()):
        if lease.end_date is not None:
            readings = [r for r in readings if r[3] <= lease.end_date]
        moved_in = [r for r in readings if r[3] <= lease.start_date]
        if moved_in:
            readings = [r for r in readings if r[3] >= moved_in[-1][3]]
        # From the latest reading billed up to within the lease's dates, and from the
        # latest one priced at 0 before the last: usage up to it was billed at nothing
        # (no line is written for it), not owed at a rate set later.
        start = [i for i, r in enumerate(readings) if r[6] or (r[5] == 0 and i < len(readings) - 1)]
        if start:
            readings = readings[start[-1] :]
        if len(readings) < 2:
            continue  # a baseline only: nothing consumed since it yet
        first, last = readings[0], readings[-1]
        for before, after in zip(readings, readings[1:], strict=False):
            if after[4] < before[4]:
                first, last = before, after
                break
        usage.append(
            rules.MeterReadings(
                meter_id=last[0],
                label=meter,
                previous=first[4],
                current=last[4],
                rate_minor_per_unit=last[5],
            )
        )
    return usage


_BILL_TO_SQL = (
    "SELECT lt.lease_id, lt.tenant_id, t.full_name, t.email"  # noqa: S608
    f" FROM {Lease.tenants.through._meta.db_table} lt"
    f" JOIN {Tenant._meta.db_table} t ON t.id = lt.tenant_id"
    " WHERE lt.lease_id = ANY(%s::bigint[]) ORDER BY lt.lease_id, lt.id"
)


def _bill_to(lease_ids: Sequence[int]) -> dict[int, tuple[int, str, str]]:
    """Per lease: (bill-to tenant id, all tenants' names, bill-to email). The first
    tenant added to the lease is the one whose receivable carries the invoice."""
    rows = prepared_rows(_BILL_TO_SQL, [list(lease_ids)])
    out: dict[int, tuple[int, list[str], str]] = {}
    for lease_id, tenant_id, name, email in rows:
        if lease_id not in out:
            out[lease_id] = (tenant_id, [name], email)
        else:
            out[lease_id][1].append(name)
    return {k: (t, ", ".join(names), email) for k, (t, names, email) in out.items()}


# PostgreSQL types of binary COPY, by the column type Django declares.
_COPY_TYPES = {
    "bigint": "int8",
    "integer": "int4",
    "smallint": "int2",
    "boolean": "bool",
    "date": "date",
    "timestamp with time zone": "timestamptz",
    "varchar": "text",
    "text": "text",
}


class _CopyRows:
    """Rows for one model's table, written with one binary COPY.

    The columns are the model's concrete fields, so a field added later is written
    too: with the value given, else its default (evaluated once per chunk); a field
    with neither fails loudly as a NOT NULL violation. Rows are plain tuples: building
    model instances for bulk_create cost more than half of the chunk's Python time.
    """

    _layouts: dict[tuple, tuple] = {}

    def __init__(self, model, *, skip: tuple[str, ...] = ()):
        self.model = model
        layout = self._layouts.get((model, skip))
        if layout is None:
            fields = [f for f in model._meta.concrete_fields if f.attname not in skip]
            layout = self._layouts[(model, skip)] = (
                fields,
                ", ".join(connection.ops.quote_name(f.column) for f in fields),
                [_COPY_TYPES[f.db_type(connection).split("(")[0]] for f in fields],
            )
        fields, self.columns, self.types = layout
        # In column order: merging a row's values into it keeps that order.
        self.defaults = {f.attname: f.get_default() for f in fields}
        self.rows: list[tuple] = []

    def add(self, **values) -> None:
        # A misspelt name makes the row longer than the column list: COPY refuses it.
        self.rows.append(tuple({**self.defaults, **values}.values()))

    def write(self) -> None:
        if not self.rows:
            return
        table = connection.ops.quote_name(self.model._meta.db_table)
        statement = f"COPY {table} ({self.columns}) FROM STDIN (FORMAT BINARY)"
        with (
            connection.cursor() as cursor,
            connection.wrap_database_errors,
            cursor.copy(statement) as copy,
        ):
            copy.set_types(self.types)
            for row in self.rows:
                copy.write_row(row)


def _write_invoices(
    *, items: Sequence[_RunWork], bill_to: dict[int, tuple[int, str, str]]
) -> tuple[dict[int, int], list[int]]:
    """Invoices, lines, postings and outbox rows of every run's drafts, one COPY per table
    for all of them: (invoices created per run id, notification ids).

    The leases were checked inside this transaction (under the run locks) to have no
    invoice yet, so the rows are new: COPY, with the unique (lease, period) key as the
    backstop, and no outbox conflicts are possible on fresh invoice ids. A run whose
    landlord reviews drafts gets drafts: no number, no posting, no email.
    """
    items = [item for item in items if item.drafts]
    if not items:
        return {}, []
    counters = []
    to_notify = 0
    for item in items:
        if not item.settings_row.review_drafts:
            # A number's year is its invoice's issue year (decision 0020).
            per_year = Counter(draft.issue_date.year for _lease_id, draft in item.drafts)
            counters += [
                (item.run.landlord_id, item.settings_row.number_prefix, year, count)
                for year, count in sorted(per_year.items())
            ]
            if item.settings_row.send_emails:
                to_notify += sum(1 for lease_id, _d in item.drafts if bill_to[lease_id][2])
    numbers_of, invoice_ids, notification_ids = _allocate_numbers_and_ids(
        counters=counters,
        invoices=sum(len(item.drafts) for item in items),
        notifications=to_notify,
    )
    now = timezone.now()
    invoices = _CopyRows(Invoice)
    lines = _CopyRows(InvoiceLine, skip=("id",))
    outbox = _CopyRows(Notification)
    postings: list[tuple[Landlord, list[ledger.Posting]]] = []
    next_invoice = iter(invoice_ids)
    next_notification = iter(notification_ids)
    for item in items:
        run, landlord = item.run, item.run.landlord
        issue_now = not item.settings_row.review_drafts
        emails = issue_now and item.settings_row.send_emails
        state = InvoiceState.ISSUED if issue_now else InvoiceState.DRAFT
        if issue_now:
            of_year = {
                year: iter(numbers_of[(landlord.pk, year)])
                for year in {draft.issue_date.year for _lease_id, draft in item.drafts}
            }
            numbers = [next(of_year[draft.issue_date.year]) for _lease_id, draft in item.drafts]
        else:
            numbers = [None] * len(item.drafts)
        landlord_postings: list[ledger.Posting] = []
        midnights: dict[date, datetime] = {}
        for (lease_id, draft), number in zip(item.drafts, numbers, strict=True):
            pk = next(next_invoice)
            tenant_id, names, email = bill_to[lease_id]
            invoices.add(
                id=pk,
                landlord_id=landlord.pk,
                created_at=now,
                updated_at=now,
                lease_id=lease_id,
                tenant_id=tenant_id,
                billing_run_id=run.pk,
                period_start=draft.period_start,
                period_end=draft.period_end,
                issue_date=draft.issue_date,
                due_date=draft.due_date,
                currency=draft.currency,
                number=number,
                state=state,
                subtotal_minor=draft.subtotal_minor,
                tax_minor=draft.tax_minor,
                total_minor=draft.total_minor,
                bill_to_name=names[:400],
            )
            for position, ln in enumerate(draft.lines, start=1):
                lines.add(
                    invoice_id=pk,
                    position=position,
                    charge_id=ln.charge_id,
                    kind=ln.kind,
                    description=ln.description[:300],
                    quantity=ln.quantity,
                    unit_amount_minor=ln.unit_amount_minor,
                    amount_minor=ln.amount_minor,
                    tax_rate_bp=ln.tax_rate_bp,
                    tax_minor=ln.tax_minor,
                    service_start=ln.service_start,
                    service_end=ln.service_end,
                    meter_reading_id=ln.meter_reading_id,
                )
            if not issue_now:
                continue
            effective_at = midnights.get(draft.issue_date)
            if effective_at is None:
                effective_at = midnights[draft.issue_date] = landlord.day_start(draft.issue_date)
            landlord_postings.append(
                _issue_posting(
                    invoice_id=pk,
                    number=number,
                    lease_id=lease_id,
                    tenant_id=tenant_id,
                    currency=draft.currency,
                    effective_at=effective_at,
                    total_minor=draft.total_minor,
                    lines=draft.lines,
                )
            )
            if emails and email:
                outbox.add(
                    id=next(next_notification),
                    landlord_id=landlord.pk,
                    created_at=now,
                    updated_at=now,
                    dedupe_key=f"invoice:{pk}:issued:email",
                    kind="invoice_issued",
                    channel=Channel.EMAIL,
                    tenant_id=tenant_id,
                    invoice_id=pk,
                    to_address=email,
                )
        if landlord_postings:
            postings.append((landlord, landlord_postings))
    invoices.write()
    lines.write()
    if postings:
        # The keys name invoices created in this transaction: none can exist yet.
        ledger.postings_post_bulk_many(batches=postings, keys_known_new=True)
    outbox.write()
    return {item.run.pk: len(item.drafts) for item in items}, notification_ids


def _issue_posting(
    *,
    invoice_id: int,
    number: str,
    lease_id: int,
    tenant_id: int,
    currency: str,
    effective_at: datetime,
    total_minor: int,
    lines: Sequence[rules.LineDraft],
) -> ledger.Posting:
    """The posting `_posting_plan` + `_ledger_specs` make for one issued invoice (same
    entries, same content hash), as plain tuples for `ledger.postings_post_bulk_many`."""
    credits: dict[str, int] = {}
    for line in lines:
        code = income_account_code(line.kind)
        credits[code] = credits.get(code, 0) + line.amount_minor
        if line.tax_minor:
            credits[AccountCode.TAX_PAYABLE] = (
                credits.get(AccountCode.TAX_PAYABLE, 0) + line.tax_minor
            )
    entries = [
        EntryContent(
            AccountCode.RECEIVABLE,
            currency,
            tenant_id,
            total_minor,
            currency,
            tenant_id,
            lease_id,
            DOCUMENT_KIND,
            invoice_id,
        )
    ]
    entries += [
        EntryContent(
            code, currency, None, -amount, currency, tenant_id, lease_id, DOCUMENT_KIND, invoice_id
        )
        for code, amount in sorted(credits.items())
        if amount
    ]
    return ledger.Posting(
        f"invoice:{invoice_id}:issue",
        effective_at,
        f"Invoice {number}",
        DOCUMENT_KIND,
        invoice_id,
        entries,
    )


def _issue_post(
    *, invoice: Invoice, lines: Sequence[rules.LineDraft], description: str
) -> LedgerTransaction:
    """Post one invoice written outside the billing run (a late fee, a replacement)
    as the run posts each of its own: `_posting_plan`, on the invoice's issue day,
    under the key every invoice's posting has (`invoice:<id>:issue`)."""
    landlord = invoice.landlord
    plan = _posting_plan(
        currency=invoice.currency,
        tenant_id=invoice.tenant_id,
        total_minor=invoice.total_minor,
        lines=lines,
    )
    accounts = ledger.accounts_get_or_create(landlord=landlord, keys={k for k, _a in plan})
    ref = {"document_kind": DOCUMENT_KIND, "document_id": invoice.pk}
    return ledger.transaction_post(
        landlord=landlord,
        idempotency_key=f"invoice:{invoice.pk}:issue",
        effective_at=landlord.day_start(invoice.issue_date),
        description=description,
        entries=[
            ledger.EntrySpec(
                account=accounts[key],
                amount_minor=amount,
                currency=invoice.currency,
                tenant_id=invoice.tenant_id,
                lease_id=invoice.lease_id,
                **ref,
            )
            for key, amount in plan
        ],
        **ref,
    )


def _enqueue_notifications(ids: Sequence[int]) -> None:
    from invoices.tasks import notifications_send

    for start in range(0, len(ids), 200):
        batch = list(ids[start : start + 200])
        notifications_send.apply_async(
            kwargs={"notification_ids": batch},
            # Celery's repr of 200 ids cost more than the rest of the publish.
            kwargsrepr=f"{{'notification_ids': <{len(batch)} ids>}}",
        )


@transaction.atomic
def invoice_void(*, invoice: Invoice, reason: str, actor) -> Invoice:
    """Void an issued invoice: its ledger posting is reversed (the credit note), the
    document keeps its number and is marked void; it is never edited or deleted.

    Money already paid against it becomes the tenant's credit (a second posting), so
    the void invoice ends at zero and the credit can settle other invoices.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the invoice is voided."})
    # Tenant before invoice: the order payments use, so the two never deadlock.
    list(Tenant.objects.select_for_update().filter(pk=invoice.tenant_id).values_list("pk"))
    locked = Invoice.objects.select_for_update().select_related("landlord").get(pk=invoice.pk)
    if locked.state == InvoiceState.VOID:
        raise ValidationError({"__all__": f"Invoice {locked.number} is already void."})
    if locked.state == InvoiceState.DRAFT:
        raise ValidationError(
            {"__all__": "A draft has no number yet; discard the run's drafts instead."}
        )
    landlord = locked.landlord
    now = timezone.now()
    posting = LedgerTransaction.objects.for_landlord(landlord).get(
        idempotency_key=f"invoice:{locked.pk}:issue"
    )
    # An invoice written ahead of its issue day (a run on schedule for a month to come)
    # is posted on that day: voided before it, the credit note takes the same day, so
    # the books never show it reversed before it was billed.
    effective = max(now, posting.effective_at)
    ledger.transaction_reverse(
        landlord=landlord,
        transaction=posting,
        idempotency_key=f"invoice:{locked.pk}:void",
        reason=f"Void {locked.number}: {reason}",
        effective_at=effective,
    )
    _paid_to_credit(invoice=locked, when=effective)
    locked.state = InvoiceState.VOID
    locked.void_reason = reason[:300]
    locked.voided_at = now
    locked.save(update_fields=["state", "void_reason", "voided_at", "updated_at"])
    audit(
        landlord=landlord,
        actor=actor,
        action="invoice.void",
        obj=locked,
        summary=f"Voided {locked.number}: {reason}",
    )
    _void_notice_queue(invoice=locked)
    return locked


def _void_notice_queue(*, invoice: Invoice) -> None:
    """Tell a tenant who was emailed the invoice that it no longer stands, once (the
    outbox's unique key), after commit. An invoice not yet sent needs no notice: its
    queued email is dropped when it finds the invoice void."""
    issued = (
        Notification.objects.filter(
            landlord=invoice.landlord,
            invoice=invoice,
            kind="invoice_issued",
            channel=Channel.EMAIL,
            status=NotificationStatus.SENT,
        )
        .values_list("to_address", flat=True)
        .first()
    )
    if not issued:
        return
    notice, created = Notification.objects.get_or_create(
        landlord=invoice.landlord,
        dedupe_key=f"invoice:{invoice.pk}:voided:email",
        defaults={
            "kind": "invoice_voided",
            "channel": Channel.EMAIL,
            "tenant_id": invoice.tenant_id,
            "invoice": invoice,
            "to_address": issued,
        },
    )
    if created:
        transaction.on_commit(lambda: _enqueue_notifications([notice.pk]))


def _paid_to_credit(*, invoice: Invoice, when: datetime) -> None:
    """After the void reversal, the invoice's receivable holds minus what was paid on
    it; move that to the tenant's credit account."""
    balance = ledger_selectors.document_balance(
        landlord=invoice.landlord, document_kind=DOCUMENT_KIND, document_id=invoice.pk
    ).get(invoice.currency, 0)
    if balance < 0:
        _credit_move(
            invoice=invoice,
            to_credit=-balance,
            key=f"invoice:{invoice.pk}:void:credit",
            description=f"Paid on void {invoice.number} kept as credit",
            when=when,
        )


def _credit_move(
    *, invoice: Invoice, to_credit: int, key: str, description: str, when: datetime
) -> None:
    """Move `to_credit` from the invoice's receivable to the tenant's credit (negative:
    from credit onto the invoice, i.e. credit pays it), in one posting on the invoice."""
    landlord, currency = invoice.landlord, invoice.currency
    receivable = ledger.AccountKey(AccountCode.RECEIVABLE, currency, invoice.tenant_id)
    credit = ledger.AccountKey(AccountCode.TENANT_CREDIT, currency, invoice.tenant_id)
    accounts = ledger.accounts_get_or_create(landlord=landlord, keys=[receivable, credit])
    ref = {"document_kind": DOCUMENT_KIND, "document_id": invoice.pk}
    ledger.transaction_post(
        landlord=landlord,
        idempotency_key=key,
        effective_at=when,
        description=description,
        entries=[
            ledger.EntrySpec(
                account=accounts[receivable],
                amount_minor=to_credit,
                currency=currency,
                lease_id=invoice.lease_id,
                **ref,
            ),
            ledger.EntrySpec(
                account=accounts[credit],
                amount_minor=-to_credit,
                currency=currency,
                lease_id=invoice.lease_id,
            ),
        ],
        **ref,
    )


# --- a lease ended after it was billed ----------------------------------------------


@dataclass(frozen=True)
class LeaseEnded:
    """What `lease_end_and_rebill` did besides ending the lease."""

    lease: Lease
    voided: tuple[Invoice, ...]  # issued invoices that no longer stand
    replacements: tuple[Invoice, ...]  # the invoices issued for the days still let
    drafts_changed: int  # drafts of a run under review cut short (or dropped)


@transaction.atomic
def lease_end_and_rebill(
    *, landlord: Landlord, lease: Lease, end_date: date, reason: str, actor
) -> LeaseEnded:
    """End a lease (`tenants.services.lease_end`) and bring what was billed for days
    from `end_date` on (the first day the unit is free) into line, in one transaction.

    An issued rent invoice is never edited: one that billed such days is voided (its
    posting reversed, money paid on it kept as the tenant's credit) and, when some of
    its days were still let or it carried one-off or metered charges, replaced by a
    new invoice for exactly those (`rules.lines_after_lease_end`), numbered in the
    series and dated today like any invoice written late (decision 0016). The credit
    from the void pays the replacement at once, as far as it goes. Drafts of a run
    under review are cut short in place (they have no number or posting yet).
    Decision 0017.
    """
    lease = tenant_services.lease_end(
        landlord=landlord, lease=lease, end_date=end_date, reason=reason, actor=actor
    )
    recurring = {
        pk: (description.strip() or rules.kind_label(kind))
        for pk, kind, description in Charge.objects.for_landlord(landlord)
        .filter(lease=lease, frequency=ChargeFrequency.MONTHLY)
        .values_list("pk", "kind", "description")
    }
    billed = (
        Invoice.objects.for_landlord(landlord)
        .filter(lease=lease, kind="rent", period_end__gt=end_date)
        .exclude(state=InvoiceState.VOID)
    )
    # Locks in the order every other writer takes them, so none waits on another in
    # the opposite order: tenants (payments; dunning, whose late fees then take the
    # invoice and the number counter), the runs of drafts (their chunks and the draft
    # review take the run, then the counter), the invoices, then the counters.
    seen = list(billed.values_list("tenant_id", "billing_run_id", "state"))
    list(
        Tenant.objects.select_for_update()
        .filter(pk__in={tenant_id for tenant_id, _run, _state in seen})
        .order_by("pk")
        .values_list("pk")
    )
    list(
        BillingRun.objects.select_for_update()
        .filter(pk__in={run for _t, run, state in seen if run and state == InvoiceState.DRAFT})
        .order_by("pk")
        .values_list("pk")
    )
    # Read under the locks: a draft issued meanwhile is an issued invoice now.
    affected = list(
        billed.select_for_update(of=("self",))
        .select_related("landlord")
        .order_by("period_start", "pk")
    )
    stored: dict[int, list[InvoiceLine]] = defaultdict(list)
    for line in InvoiceLine.objects.filter(invoice__in=affected).order_by("invoice_id", "position"):
        stored[line.invoice_id].append(line)
    plans: list[tuple[Invoice, tuple[rules.LineDraft, ...]]] = []
    for invoice in affected:
        kept = rules.lines_after_lease_end(
            [_line_draft(line, invoice) for line in stored[invoice.pk]],
            end_date=end_date,
            recurring=recurring,
        )
        if kept is not None:
            plans.append((invoice, kept))
    # Every number before the first posting (which takes the ledger head): a billing
    # chunk takes a counter, then the head.
    needs_number = [
        invoice for invoice, kept in plans if kept and invoice.state == InvoiceState.ISSUED
    ]
    numbers: dict[int, str] = {}
    if needs_number:
        # The replacements are dated today (`_invoice_replace`).
        today = timezone.localdate(timezone.now(), landlord.tz)
        numbers = _numbers_by_issue_year(
            landlord=landlord,
            series=invoice_settings_get(landlord=landlord).number_prefix,
            dated=[(invoice.pk, today) for invoice in needs_number],
        )
    voided: list[Invoice] = []
    replacements: list[Invoice] = []
    drafts_changed = 0
    for invoice, kept in plans:
        if invoice.state == InvoiceState.DRAFT:
            _draft_cut(invoice=invoice, lines=kept)
            drafts_changed += 1
            continue
        voided_invoice, replacement = _invoice_replace(
            invoice=invoice,
            lines=kept,
            number=numbers.get(invoice.pk),
            end_date=end_date,
            actor=actor,
        )
        voided.append(voided_invoice)
        if replacement is not None:
            replacements.append(replacement)
    return LeaseEnded(
        lease=lease,
        voided=tuple(voided),
        replacements=tuple(replacements),
        drafts_changed=drafts_changed,
    )


def _line_draft(line: InvoiceLine, invoice: Invoice) -> rules.LineDraft:
    return rules.LineDraft(
        charge_id=line.charge_id,
        kind=line.kind,
        description=line.description,
        quantity=line.quantity,
        unit_amount_minor=line.unit_amount_minor,
        amount_minor=line.amount_minor,
        tax_rate_bp=line.tax_rate_bp,
        tax_minor=line.tax_minor,
        service_start=line.service_start or invoice.period_start,
        service_end=line.service_end or invoice.period_end,
        meter_reading_id=line.meter_reading_id,
    )


def _invoice_lines(invoice: Invoice, lines: Sequence[rules.LineDraft]) -> list[InvoiceLine]:
    return [
        InvoiceLine(
            invoice=invoice,
            position=position,
            charge_id=line.charge_id,
            kind=line.kind,
            description=line.description[:300],
            quantity=line.quantity,
            unit_amount_minor=line.unit_amount_minor,
            amount_minor=line.amount_minor,
            tax_rate_bp=line.tax_rate_bp,
            tax_minor=line.tax_minor,
            service_start=line.service_start,
            service_end=line.service_end,
            meter_reading_id=line.meter_reading_id,
        )
        for position, line in enumerate(lines, start=1)
    ]


def _draft_cut(*, invoice: Invoice, lines: Sequence[rules.LineDraft]) -> None:
    """A draft is not issued yet, so it is rewritten; with nothing left it goes, and
    its run counts one lease and one invoice fewer (as discarding drafts does). The
    caller holds the draft's run and row locks, so it is still a draft."""
    InvoiceLine.objects.filter(invoice=invoice, invoice__state=InvoiceState.DRAFT).delete()
    if not lines:
        Invoice.objects.filter(pk=invoice.pk, state=InvoiceState.DRAFT).delete()
        if invoice.billing_run_id is not None:
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE invoices_billingrun SET invoices_created = invoices_created - 1,"
                    " leases_due = GREATEST(leases_due - 1, 0), updated_at = %s WHERE id = %s",
                    [timezone.now(), invoice.billing_run_id],
                )
        return
    InvoiceLine.objects.bulk_create(_invoice_lines(invoice, lines))
    subtotal = sum(line.amount_minor for line in lines)
    tax_minor = sum(line.tax_minor for line in lines)
    Invoice.objects.filter(pk=invoice.pk, state=InvoiceState.DRAFT).update(
        subtotal_minor=subtotal,
        tax_minor=tax_minor,
        total_minor=subtotal + tax_minor,
        updated_at=timezone.now(),
    )


def _invoice_replace(
    *,
    invoice: Invoice,
    lines: Sequence[rules.LineDraft],
    number: str | None,
    end_date: date,
    actor,
) -> tuple[Invoice, Invoice | None]:
    """Void `invoice` and, if `lines` bill anything, issue its replacement `number`."""
    landlord = invoice.landlord
    ended = f"the lease ended, the unit is free from {end_date:%Y-%m-%d}"
    if not lines or number is None:
        return invoice_void(
            invoice=invoice, reason=f"No days left to bill: {ended}", actor=actor
        ), None
    settings_row = invoice_settings_get(landlord=landlord)
    voided = invoice_void(invoice=invoice, reason=f"Replaced by {number}: {ended}", actor=actor)
    now = timezone.now()
    issue_date = timezone.localdate(now, landlord.tz)
    due_days = Lease.objects.filter(pk=invoice.lease_id).values_list("due_days", flat=True)[0]
    subtotal = sum(line.amount_minor for line in lines)
    tax_minor = sum(line.tax_minor for line in lines)
    replacement = Invoice.objects.create(
        landlord=landlord,
        lease_id=invoice.lease_id,
        tenant_id=invoice.tenant_id,
        kind="rent",
        adjusts=invoice,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        issue_date=issue_date,
        due_date=issue_date + timedelta(days=due_days),
        currency=invoice.currency,
        number=number,
        state=InvoiceState.ISSUED,
        subtotal_minor=subtotal,
        tax_minor=tax_minor,
        total_minor=subtotal + tax_minor,
        bill_to_name=invoice.bill_to_name,
    )
    InvoiceLine.objects.bulk_create(_invoice_lines(replacement, lines))
    _issue_post(
        invoice=replacement,
        lines=lines,
        description=f"Invoice {number}, replacing {invoice.number}",
    )
    # The void's credit exists from the void's posting on (later than now only for an
    # invoice written ahead of its issue day): it pays the replacement from then.
    voided_on = (
        LedgerTransaction.objects.for_landlord(landlord)
        .values_list("effective_at", flat=True)
        .get(idempotency_key=f"invoice:{invoice.pk}:void")
    )
    _void_credit_to_replacement(voided=voided, replacement=replacement, when=max(now, voided_on))
    audit(
        landlord=landlord,
        actor=actor,
        action="invoice.replace",
        obj=replacement,
        summary=f"Issued {number} replacing {invoice.number}: {ended}",
    )
    if settings_row.send_emails:
        email = Tenant.objects.filter(pk=replacement.tenant_id).values_list("email", flat=True)[0]
        if email:
            notice = Notification.objects.create(
                landlord=landlord,
                dedupe_key=f"invoice:{replacement.pk}:issued:email",
                kind="invoice_issued",
                channel=Channel.EMAIL,
                tenant_id=replacement.tenant_id,
                invoice=replacement,
                to_address=email,
            )
            transaction.on_commit(lambda: _enqueue_notifications([notice.pk]))
    return voided, replacement


def _void_credit_to_replacement(*, voided: Invoice, replacement: Invoice, when: datetime) -> None:
    """What was paid on the voided invoice (now the tenant's credit, `_paid_to_credit`)
    pays its replacement first, up to the replacement's total; the rest stays credit."""
    paid = (
        LedgerEntry.objects.filter(
            landlord=voided.landlord,
            transaction__idempotency_key=f"invoice:{voided.pk}:void:credit",
            account__code=AccountCode.TENANT_CREDIT,
        ).aggregate(total=Sum("amount_minor"))["total"]
        or 0
    )
    amount = min(-paid, replacement.total_minor)
    if amount > 0:
        _credit_move(
            invoice=replacement,
            to_credit=-amount,
            key=f"invoice:{replacement.pk}:paid-from:{voided.pk}",
            description=f"Paid on void {voided.number} applied to {replacement.number}",
            when=when,
        )


# --- late fees ----------------------------------------------------------------------


def late_fee_invoice_issue(
    *,
    invoice: Invoice,
    amount_minor: int,
    description: str,
    issue_date: date,
    actor=None,
) -> Invoice:
    """Issue a late-fee invoice for an overdue rent invoice (dunning calls this).

    The rent invoice is never edited: the fee is a document of its own, numbered in
    the landlord's series, due at once, posted receivable → late-fee income (plus tax
    if the landlord taxes late fees) in the caller's transaction under the key every
    invoice's posting has (`invoice:<id>:issue`), so voiding treats it alike. The
    caller holds the exactly-once claim (dunning's unique step row).
    """
    if amount_minor <= 0:
        raise ValidationError({"amount_minor": "A late fee must be more than zero."})
    if invoice.kind != "rent" or invoice.state != InvoiceState.ISSUED:
        raise ValidationError({"invoice": "Late fees apply to issued rent invoices only."})
    landlord = invoice.landlord
    rate = selectors.tax_rates(landlord=landlord).get(ChargeKind.LATE_FEE, 0)
    tax_minor = money_rounding.tax(amount_minor, rate)
    settings_row = invoice_settings_get(landlord=landlord)
    (number,) = _allocate_numbers(
        landlord=landlord, series=settings_row.number_prefix, year=issue_date.year, count=1
    )
    fee = Invoice.objects.create(
        landlord=landlord,
        lease_id=invoice.lease_id,
        tenant_id=invoice.tenant_id,
        kind="late_fee",
        adjusts=invoice,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        issue_date=issue_date,
        due_date=issue_date,
        currency=invoice.currency,
        number=number,
        state=InvoiceState.ISSUED,
        subtotal_minor=amount_minor,
        tax_minor=tax_minor,
        total_minor=amount_minor + tax_minor,
        bill_to_name=invoice.bill_to_name,
    )
    InvoiceLine.objects.create(
        invoice=fee,
        position=1,
        kind=ChargeKind.LATE_FEE,
        description=description[:300],
        quantity=1,
        unit_amount_minor=amount_minor,
        amount_minor=amount_minor,
        tax_rate_bp=rate,
        tax_minor=tax_minor,
    )
    line = rules.LineDraft(
        charge_id=None,
        kind=ChargeKind.LATE_FEE,
        description=description,
        quantity=1,
        unit_amount_minor=amount_minor,
        amount_minor=amount_minor,
        tax_rate_bp=rate,
        tax_minor=tax_minor,
        service_start=invoice.period_start,
        service_end=invoice.period_end,
    )
    _issue_post(invoice=fee, lines=[line], description=f"Late fee {number} for {invoice.number}")
    audit(
        landlord=landlord,
        actor=actor,
        action="invoice.late_fee",
        obj=fee,
        summary=f"Late fee {number} for {invoice.number}",
    )
    return fee


# --- draft review -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StoredLine:
    """An invoice line as `_posting_plan` needs it, read back from the database."""

    kind: str
    amount_minor: int
    tax_minor: int


def _run_for_review(run: BillingRun) -> BillingRun:
    locked = BillingRun.objects.select_for_update().select_related("landlord").get(pk=run.pk)
    if locked.status != BillingRunStatus.REVIEW:
        raise ValidationError(
            {
                "__all__": f"The billing run of {locked.period_start:%B %Y} is not waiting "
                f"for review ({locked.get_status_display().lower()}); nothing was changed."
            }
        )
    return locked


@transaction.atomic
def billing_run_issue(*, run: BillingRun, actor) -> int:
    """Issue a reviewed run's drafts: consecutive numbers, ledger postings and invoice
    emails, exactly as a run without review would have written them; the run completes.
    A draft reviewed after its issue day is dated today, its due date moved by as many
    days (the tenant keeps the lease's due days; `rules.invoice_lines_for`).

    The run row is locked first (chunks of the run take the same lock), so two clicks
    cannot issue twice: the second finds the run completed and is refused. Returns the
    number of invoices issued.
    """
    run = _run_for_review(run)
    landlord = run.landlord
    settings_row = invoice_settings_get(landlord=landlord)
    drafts = list(
        Invoice.objects.filter(landlord=landlord, billing_run=run, state=InvoiceState.DRAFT)
        .order_by("pk")
        .values_list(
            "pk", "lease_id", "tenant_id", "currency", "issue_date", "total_minor", "tenant__email"
        )
    )
    now = timezone.now()
    today = timezone.localdate(now, landlord.tz)
    drafts = [(*d[:4], max(d[4], today), *d[5:]) for d in drafts]
    notification_ids: list[int] = []
    if drafts:
        lines: dict[int, list[_StoredLine]] = defaultdict(list)
        for invoice_id, kind, amount, tax_minor in (
            InvoiceLine.objects.filter(invoice_id__in=[d[0] for d in drafts])
            .order_by("invoice_id", "position")
            .values_list("invoice_id", "kind", "amount_minor", "tax_minor")
        ):
            lines[invoice_id].append(_StoredLine(kind, amount, tax_minor))
        number_of = _numbers_by_issue_year(
            landlord=landlord,
            series=settings_row.number_prefix,
            dated=[(d[0], d[4]) for d in drafts],
        )
        numbers = [number_of[d[0]] for d in drafts]
        ids = [d[0] for d in drafts]
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE invoices_invoice i SET number = v.number, state = %s, updated_at = %s,"
                " due_date = i.due_date + (v.issue_date - i.issue_date), issue_date = v.issue_date"
                " FROM unnest(%s::bigint[], %s::text[], %s::date[]) AS v(id, number, issue_date)"
                " WHERE i.id = v.id AND i.state = %s",
                [
                    InvoiceState.ISSUED,
                    now,
                    ids,
                    numbers,
                    [d[4] for d in drafts],
                    InvoiceState.DRAFT,
                ],
            )
        issued = [
            _Issued(
                invoice_id=pk,
                number=number,
                lease_id=lease_id,
                tenant_id=tenant_id,
                currency=currency,
                issue_date=issue_date,
                plan=_posting_plan(
                    currency=currency,
                    tenant_id=tenant_id,
                    total_minor=total,
                    lines=lines[pk],
                ),
            )
            for (pk, lease_id, tenant_id, currency, issue_date, total, _email), number in zip(
                drafts, numbers, strict=True
            )
        ]
        ledger.transactions_post_bulk(
            landlord=landlord, specs=_ledger_specs(landlord=landlord, issued=issued)
        )
        if settings_row.send_emails:
            created = Notification.objects.bulk_create(
                [
                    Notification(
                        landlord=landlord,
                        dedupe_key=f"invoice:{pk}:issued:email",
                        kind="invoice_issued",
                        channel=Channel.EMAIL,
                        tenant_id=tenant_id,
                        invoice_id=pk,
                        to_address=email,
                    )
                    for pk, _l, tenant_id, _c, _d, _t, email in drafts
                    if email
                ]
            )
            notification_ids = [n.pk for n in created]
    BillingRun.objects.filter(pk=run.pk).update(
        status=BillingRunStatus.COMPLETED, finished_at=now, updated_at=now
    )
    audit(
        landlord=landlord,
        actor=actor,
        action="billing_run.issue",
        obj=run,
        summary=f"Issued {len(drafts)} reviewed invoices of {run.period_start:%Y-%m}",
    )
    if notification_ids:
        transaction.on_commit(lambda: _enqueue_notifications(notification_ids))
    return len(drafts)


@transaction.atomic
def billing_run_discard_drafts(*, run: BillingRun, actor) -> int:
    """Throw away a reviewed run's drafts. They never had a number, a posting or an
    email, so deleting them loses nothing; their leases are due again and the next
    start of the month bills them afresh. Returns how many drafts were discarded."""
    run = _run_for_review(run)
    drafts = Invoice.objects.filter(
        landlord=run.landlord, billing_run=run, state=InvoiceState.DRAFT
    )
    count = drafts.count()
    InvoiceLine.objects.filter(invoice__in=drafts).delete()
    drafts.delete()
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE invoices_billingrun SET invoices_created = invoices_created - %s,"
            " leases_due = GREATEST(leases_due - %s, 0), status = %s, finished_at = %s,"
            " updated_at = %s WHERE id = %s",
            [count, count, BillingRunStatus.COMPLETED, now, now, run.pk],
        )
    audit(
        landlord=run.landlord,
        actor=actor,
        action="billing_run.discard_drafts",
        obj=run,
        summary=f"Discarded {count} draft invoices of {run.period_start:%Y-%m}",
    )
    return count


# --- meter readings -----------------------------------------------------------------


@transaction.atomic
def meter_reading_record(
    *,
    landlord: Landlord,
    unit: Unit,
    meter: str,
    reading_date: date,
    value: Decimal,
    rate_minor_per_unit: Decimal,
    actor,
) -> MeterReading:
    """Record a sub-meter reading. Meters only count up: a value below the meter's
    previous reading (or above a later one) is a misread or a replaced meter, which a
    person must sort out, so it is refused and nothing is saved."""
    if unit.landlord_id != landlord.pk:
        raise ValidationError({"__all__": "That unit belongs to another landlord."})
    meter = (meter or "").strip()
    errors: dict[str, str] = {}
    if not meter:
        errors["meter"] = "Name the meter, e.g. Cold water."
    if value < 0:
        errors["value"] = "A meter reading cannot be negative."
    if rate_minor_per_unit < 0:
        errors["rate_minor_per_unit"] = "The rate cannot be negative."
    if errors:
        raise ValidationError(errors)
    # Lock the unit: two readings of one meter recorded at once are checked in turn.
    Unit.objects.select_for_update().filter(pk=unit.pk).exists()
    same = MeterReading.objects.filter(landlord=landlord, unit=unit, meter=meter)
    previous = same.filter(reading_date__lt=reading_date).order_by("-reading_date").first()
    if previous is not None and value < previous.value:
        raise ValidationError(
            {
                "value": f"{value} is lower than the previous reading of {meter}, "
                f"{previous.value} on {previous.reading_date:%Y-%m-%d}."
            }
        )
    following = same.filter(reading_date__gt=reading_date).order_by("reading_date").first()
    if following is not None and value > following.value:
        raise ValidationError(
            {
                "value": f"{value} is higher than the later reading of {meter}, "
                f"{following.value} on {following.reading_date:%Y-%m-%d}."
            }
        )
    try:
        with transaction.atomic():
            reading = MeterReading.objects.create(
                landlord=landlord,
                unit=unit,
                meter=meter,
                reading_date=reading_date,
                value=value,
                rate_minor_per_unit=rate_minor_per_unit,
            )
    except IntegrityError:
        raise ValidationError(
            {"reading_date": f"{meter} already has a reading on {reading_date:%Y-%m-%d}."}
        ) from None
    audit(
        landlord=landlord,
        actor=actor,
        action="meter_reading.record",
        obj=reading,
        summary=f"{unit}: {meter} {value} on {reading_date:%Y-%m-%d}",
    )
    return reading


# --- settings -----------------------------------------------------------------------


@transaction.atomic
def invoice_settings_update(
    *,
    landlord: Landlord,
    actor,
    number_prefix: str,
    review_drafts: bool,
    send_emails: bool,
    tax_rates_bp: dict[str, int | None],
) -> InvoiceSettings:
    """Change the landlord's invoicing preferences and tax rates per charge kind.

    `tax_rates_bp` maps a charge kind to basis points (1 900 = 19 %); None or 0 means
    untaxed and removes the rate. Rates apply to invoices billed from now on; issued
    invoices keep the rate on their lines.
    """
    errors: dict[str, str] = {}
    number_prefix = (number_prefix or "").strip()
    if not number_prefix or not number_prefix.replace("_", "").isalnum():
        errors["number_prefix"] = "Use letters and digits only, e.g. INV."
    for kind, rate in tax_rates_bp.items():
        if kind not in ChargeKind.values:
            errors["__all__"] = f"Unknown charge kind {kind!r}."
        elif rate is not None and not 0 <= rate <= 10_000:
            errors[f"tax_{kind}"] = "A tax rate is between 0 and 100 %."
    if errors:
        raise ValidationError(errors)
    row = InvoiceSettings.objects.select_for_update().filter(landlord=landlord).first()
    if row is None:
        row = invoice_settings_get(landlord=landlord)
    row.number_prefix = number_prefix
    row.review_drafts = review_drafts
    row.send_emails = send_emails
    row.save(update_fields=["number_prefix", "review_drafts", "send_emails", "updated_at"])
    for kind, rate in tax_rates_bp.items():
        if rate:
            TaxRate.objects.update_or_create(
                landlord=landlord, kind=kind, defaults={"rate_bp": rate}
            )
        else:
            TaxRate.objects.filter(landlord=landlord, kind=kind).delete()
    rates = ", ".join(f"{k} {r / 100:g} %" for k, r in sorted(tax_rates_bp.items()) if r)
    audit(
        landlord=landlord,
        actor=actor,
        action="invoice_settings.update",
        obj=row,
        summary=f"Invoice settings: prefix {number_prefix}, review drafts {review_drafts}, "
        f"emails {send_emails}; tax {rates or 'none'}",
    )
    return row
