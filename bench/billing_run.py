"""`manage.py bench billing_run --leases 100000 --json`: the monthly bulk rent-invoice run.

1. In the bench database, build (or reuse) N active leases across 1,000 landlords, two
   monthly charges each (bench.billing_data), and empty the previous run's output.
2. Start a real Celery worker (prefork, concurrency 2, the project's settings; only
   the outbox sender is routed away from it, see bench.worker).
3. Call the beat tick, `billing_runs_start_due`, at a moment inside the month; it starts
   every landlord's run and queues the chunk tasks. `seconds` runs from that call until
   every run is completed in the database.
4. Call it again: `rerun_seconds`, and it must create no invoice.
5. Check the output: one invoice per lease, gapless numbers per landlord, one balanced
   ledger transaction per invoice, intact hash chains.
6. Baselines (bench.billing_baselines): the naive per-lease loop on a sample of the
   next month, and the binary COPY limit for the same N.

Wall time on a shared machine is noisy; `cpu_seconds` (worker processes, this process,
the PostgreSQL backends) is the steadier figure. docs/decisions/0004-bulk-billing.md
has the numbers and what they mean.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, date, datetime
from pathlib import Path

from django.conf import settings
from django.db import connection

from bench import billing_baselines, billing_data
from bench.common import (
    BENCH_DATABASE,
    BENCH_REDIS_DB,
    CeleryWorker,
    CpuMeter,
    celery_use_broker,
    database_drop,
    database_ensure,
    log,
    raw_cursor,
    redis_url,
    self_peak_rss_kb,
    timed,
)
from invoices import services
from invoices.models import BillingRunStatus, Invoice
from ledger.selectors import ledger_verify
from tenants.models import Landlord, Lease

PERIOD = date(2027, 1, 1)
# Noon UTC on the 1st is the 1st in every bench landlord's time zone.
NOW = datetime(2027, 1, 1, 12, tzinfo=UTC)
NAIVE_PERIOD = date(2027, 2, 1)


def add_arguments(parser) -> None:
    parser.add_argument("--leases", type=int, default=100_000)
    parser.add_argument("--landlords", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--naive-sample", type=int, default=500, help="leases for the naive loop")
    parser.add_argument(
        "--no-baselines", action="store_true", help="skip the naive loop and the COPY limit"
    )
    parser.add_argument("--database", default=BENCH_DATABASE)
    parser.add_argument("--redis-db", type=int, default=BENCH_REDIS_DB)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the run")
    parser.add_argument(
        "--reset", action="store_true", help="drop the bench database and build it again"
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        help=f"experiment: leases per chunk task (default: services.CHUNK_SIZE, {services.CHUNK_SIZE})",
    )
    parser.add_argument(
        "--task-leases",
        type=int,
        help="experiment: leases per Celery task, small landlords' chunks packed together "
        f"(default: services.TASK_LEASES, {services.TASK_LEASES}; 1 = one chunk per task)",
    )
    parser.add_argument(
        "--db-reuse-max",
        type=int,
        help="experiment: keep each worker's database connection for N tasks "
        "(CELERY_DB_REUSE_MAX); default: the project's settings",
    )


def run(
    *,
    leases: int,
    landlords: int,
    concurrency: int,
    naive_sample: int,
    no_baselines: bool,
    database: str,
    redis_db: int,
    timeout: float,
    reset: bool,
    db_reuse_max: int | None = None,
    chunk_size: int | None = None,
    task_leases: int | None = None,
    **_options,
) -> dict:
    if leases <= 0 or landlords <= 0 or leases % landlords:
        raise ValueError("--leases must be a positive multiple of --landlords")
    shape = billing_data.Shape(leases=leases, landlords=landlords)
    settings.DEBUG = False  # no query log: it costs time and memory at this volume
    if chunk_size:
        services.CHUNK_SIZE = chunk_size  # read by billing_runs_start_due at dispatch
    if task_leases:
        services.TASK_LEASES = task_leases  # read by the dispatch in this process
    broker = redis_url(redis_db)
    celery_use_broker(broker)
    phases: dict[str, float] = {}

    if reset:
        log(f"dropping database {database}")
        database_drop(database)
    with timed("migrate", phases):
        database_ensure(database)
    if not billing_data.dataset_present(shape) and not billing_data.dataset_is_empty():
        log("the bench database holds a dataset of another shape: rebuilding it")
        database_drop(database)
        database_ensure(database)

    worker = CeleryWorker(
        database=database,
        broker_url=broker,
        concurrency=concurrency,
        log_path=Path(settings.BASE_DIR) / ".data" / "bench" / "billing_run-worker.log",
        db_reuse_max=db_reuse_max,
    )
    worker.start()
    try:
        with timed("dataset", phases):
            built = billing_data.dataset_ensure(shape)
        with timed("reset_output", phases):
            billing_data.output_reset()
            billing_data.analyze()
        worker.wait_ready()
        load_before = round(os.getloadavg()[0], 2)

        log(f"billing {PERIOD:%Y-%m} through Celery ({concurrency} worker processes)")
        cpu = CpuMeter(worker=worker, database=database)
        seconds, dispatch_seconds, created = _run_period(worker, shape, timeout, cpu)
        run_cpu = dict(cpu.seconds)
        log(f"run: {created} invoices in {seconds:.2f} s ({created / seconds:,.0f}/s)")
        rerun_seconds, _dispatch, rerun_created = _run_period(worker, shape, timeout, cpu)
        log(f"rerun: {rerun_created} invoices in {rerun_seconds:.2f} s")
        with timed("checks", phases):
            checks = _checks(shape)

        result = {
            "bench": "billing_run",
            "leases": leases,
            "landlords": landlords,
            "invoices_created": created,
            "seconds": round(seconds, 2),
            "invoices_per_s": round(created / seconds),
            "dispatch_seconds": round(dispatch_seconds, 2),
            "cpu_seconds": run_cpu,
            "rerun_seconds": round(rerun_seconds, 2),
            "rerun_invoices_created": rerun_created,
        }
        if not no_baselines:
            naive_rate, naive_queries = _naive_rate(naive_sample)
            with timed("copy_limit", phases):
                copy_seconds = billing_baselines.copy_limit(invoices=leases)
            with timed("copy_limit_indexed", phases):
                indexed_seconds = billing_baselines.copy_limit(invoices=leases, indexes=True)
            copy_rate = leases / copy_seconds
            result |= {
                "naive_invoices_per_s": round(naive_rate),
                "naive_queries_per_invoice": naive_queries,
                "speedup": round(created / seconds / naive_rate, 1),
                "copy_limit_invoices_per_s": round(copy_rate),
                "copy_limit_ratio": round(copy_rate / (created / seconds), 2),
                "copy_limit_indexed_invoices_per_s": round(leases / indexed_seconds),
            }
    finally:
        worker.stop()

    worker_peaks = worker.peak_rss_kb
    bench_peak = self_peak_rss_kb()
    result |= {
        "load_average_1m": [load_before, round(os.getloadavg()[0], 2)],
        "peak_rss_mb": round(max([bench_peak, *worker_peaks.values()]) / 1024),
        "peak_rss_mb_bench": round(bench_peak / 1024),
        "peak_rss_mb_worker_processes": sorted(round(kb / 1024) for kb in worker_peaks.values()),
        "peak_rss_mb_total": round((bench_peak + sum(worker_peaks.values())) / 1024),
        "worker_concurrency": concurrency,
        "worker_db_reuse_max": db_reuse_max,
        "chunk_size": services.CHUNK_SIZE,
        "task_leases": services.TASK_LEASES,
        "worker_errors": _count_errors(worker.log_path),
        "checks": checks,
        "dataset_built": built,
        "phase_seconds": phases,
        "database": database,
    }
    return result


def _run_period(worker: CeleryWorker, shape: billing_data.Shape, timeout: float, cpu: CpuMeter):
    """One beat tick, then wait until every bench run of the period is completed."""
    before = Invoice.objects.filter(period_start=PERIOD).count()
    cpu.start()
    started = time.perf_counter()
    services.billing_runs_start_due(now=NOW)
    dispatched = time.perf_counter() - started
    # A plain query: the poll runs 20 times a second on the box the run is measured on.
    poll = (
        "SELECT count(*) FROM invoices_billingrun r JOIN tenants_landlord l"
        " ON l.id = r.landlord_id AND l.slug LIKE 'bench-%%'"
        " WHERE r.period_start = %s AND r.status = %s"
    )
    while True:
        with raw_cursor() as cur:
            done = cur.execute(poll, [PERIOD, BillingRunStatus.COMPLETED]).fetchone()[0]
        if done == shape.landlords:
            break
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"timed out: {done} of {shape.landlords} runs completed")
        worker.check_alive()
        worker.sample_rss()
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    cpu.stop()
    worker.sample_rss()
    created = Invoice.objects.filter(period_start=PERIOD).count() - before
    return seconds, dispatched, created


def _checks(shape: billing_data.Shape) -> dict:
    """Exactly once, gapless, balanced, chained: the run's output must still be right."""
    with raw_cursor() as cur:
        invoices, leases_billed, numbered = cur.execute(
            "SELECT count(*), count(DISTINCT lease_id), count(number) FROM invoices_invoice "
            "WHERE period_start = %s",
            [PERIOD],
        ).fetchone()
        gaps = cur.execute(
            """
            SELECT count(*) FROM (
                SELECT landlord_id, count(*) AS n,
                       min(split_part(number, '-', 3)::int) AS lo,
                       max(split_part(number, '-', 3)::int) AS hi
                  FROM invoices_invoice GROUP BY landlord_id, split_part(number, '-', 2)
            ) s WHERE lo <> 1 OR hi <> n
            """
        ).fetchone()[0]
        transactions, entries = cur.execute(
            "SELECT (SELECT count(*) FROM ledger_ledgertransaction), "
            "(SELECT count(*) FROM ledger_ledgerentry)"
        ).fetchone()
        unbalanced = cur.execute(
            "SELECT count(*) FROM (SELECT transaction_id FROM ledger_ledgerentry "
            "GROUP BY transaction_id HAVING sum(amount_minor) <> 0) s"
        ).fetchone()[0]
        notifications = cur.execute("SELECT count(*) FROM invoices_notification").fetchone()[0]
    bench_landlords = Landlord.objects.filter(slug__startswith="bench-").order_by("pk")
    ends = (bench_landlords.first(), bench_landlords.last())
    verified = [ledger_verify(landlord=owner).ok for owner in ends]
    checks = {
        "one_invoice_per_lease": invoices == leases_billed == shape.leases,
        "all_numbered": numbered == invoices,
        "numbers_gapless": gaps == 0,
        "one_posting_per_invoice": transactions == invoices and entries == 3 * invoices,
        "ledger_balanced": unbalanced == 0,
        "hash_chains_verified": all(verified),
        "one_email_per_invoice": notifications == invoices,
    }
    checks["ok"] = all(checks.values())
    if not checks["ok"]:
        log(f"CHECKS FAILED: {checks}")
    return checks


def _naive_rate(sample: int) -> float:
    leases = list(
        Lease.objects.filter(landlord__slug__startswith="bench-")
        .select_related("landlord")
        .order_by("pk")[:sample]
    )
    created, seconds, queries = billing_baselines.naive_bill(
        leases=leases, period_start=NAIVE_PERIOD
    )
    log(
        f"naive loop: {created} invoices in {seconds:.2f} s ({created / seconds:,.0f}/s), "
        f"{queries} queries per invoice"
    )
    connection.close()
    return created / seconds, queries


def _count_errors(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if "ERROR" in line)
    except OSError:
        return 0
