"""`manage.py bench webhooks --events 20000 --json`: Stripe webhook ingest and processing.

1. In a dedicated database (`rentledger_bench_webhooks`, rebuilt every run: the ledger
   only accepts a full reset), one landlord with `--tenants` leases (bench.billing_data),
   billed for January 2027, and a Stripe Payment (PaymentIntent id) per generated
   PaymentIntent, so the events match.
2. Start the production web server setup (gunicorn, `--workers 2 --worker-class
   gthread --threads 4` like deploy/run.py, bound to 127.0.0.1 on a free port) and a
   real Celery worker, both on that database and a dedicated Redis database (the
   webhook queues drain tasks there, and keeps its "drain queued" flag in the cache).
3. Baseline: the same POSTs with a wrong signature (refused with 400 after the
   signature check, before any query): the cost of HTTP + Django + HMAC alone.
4. Post `--events` signed deliveries, a realistic mix (payment_intent.processing /
   succeeded / payment_failed, charge.refunded, types we do not handle) with ~20 %
   duplicate deliveries, shuffled, from `--senders` threads; per-request latency.
5. Wait until no event is left `received`: processing rate from the first POST.
6. Check: one row per distinct event, every duplicate ignored, nothing failed, trial
   balance zero.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

from django.conf import settings
from django.urls import reverse

from bench import billing_data
from bench.common import (
    CeleryWorker,
    celery_use_broker,
    database_drop,
    database_ensure,
    database_url,
    log,
    raw_cursor,
    redis_url,
    timed,
)

DATABASE = "rentledger_bench_webhooks"
REDIS_DB = 14
SECRET = "whsec_bench_webhooks"
PERIOD = date(2027, 1, 1)
BASE_CREATED = 1_798_000_000


def add_arguments(parser) -> None:
    parser.add_argument("--events", type=int, default=20_000, help="deliveries to POST")
    parser.add_argument("--tenants", type=int, default=500)
    parser.add_argument("--senders", type=int, default=12, help="concurrent sender threads")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument(
        "--web-threads", type=int, default=4, help="gunicorn gthread threads (0: sync workers)"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
    parser.add_argument(
        "--db-reuse-max",
        type=int,
        help="experiment: keep each worker's database connection for N tasks",
    )
    parser.add_argument("--duplicates", type=float, default=0.2, help="share of redeliveries")
    parser.add_argument("--baseline", type=int, default=2_000, help="bad-signature POSTs")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per phase")
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--redis-db", type=int, default=REDIS_DB)
    parser.add_argument("--seed", type=int, default=5)


# --- dataset and events ---------------------------------------------------------------


def _dataset(tenants: int) -> tuple[int, list[int]]:
    from invoices.services import billing_run_execute
    from tenants.models import Landlord, Tenant

    billing_data.dataset_create(billing_data.Shape(leases=tenants, landlords=1))
    landlord = Landlord.objects.get()
    billing_run_execute(
        landlord=landlord, period_start=PERIOD, as_of=date(2027, 1, 31), started_by="bench"
    )
    tenant_ids = list(
        Tenant.objects.filter(landlord=landlord).order_by("pk").values_list("pk", flat=True)
    )
    return landlord.pk, tenant_ids


def _pi(pi_id, amount, status, meta, *, charge=None, error=None) -> dict:
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_received": amount if status == "succeeded" else 0,
        "currency": "eur",
        "status": status,
        "metadata": meta,
        "latest_charge": charge,
        "payment_method_types": ["card"],
        "last_payment_error": error,
        "canceled_at": None,
        "livemode": False,
    }


def _charge(charge_id, pi_id, amount, *, fee=None, refunds=()) -> dict:
    refunded = sum(r["amount"] for r in refunds)
    return {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": refunded,
        "currency": "eur",
        "payment_intent": pi_id,
        "status": "succeeded",
        "paid": True,
        "captured": True,
        "refunded": refunded >= amount,
        "balance_transaction": (
            {"id": f"txn_{charge_id}", "object": "balance_transaction", "fee": fee}
            if fee is not None
            else f"txn_{charge_id}"
        ),
        "refunds": {"object": "list", "data": list(refunds), "has_more": False},
    }


def _event(n: int, type_: str, obj: dict, created: int) -> dict:
    return {
        "id": f"evt_bench{n:07d}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
        "data": {"object": obj},
    }


def _events(distinct: int, *, landlord_id: int, tenant_ids: list[int], rng: random.Random):
    """`distinct` events, and the Payment rows their PaymentIntents belong to."""
    events: list[dict] = []
    payments: list[tuple] = []  # (tenant_id, pi_id, amount)
    n = 0
    while len(events) < distinct:
        n += 1
        t = BASE_CREATED + n * 10
        if rng.random() < 0.1:
            obj = {"id": f"cus_bench{n}", "object": "customer"}
            events.append(_event(len(events), "customer.updated", obj, t))
            continue
        tenant_id = tenant_ids[n % len(tenant_ids)]
        pi_id, charge_id = f"pi_bench{n:07d}", f"ch_bench{n:07d}"
        amount = rng.randint(100, 2_000)
        meta = {"landlord_id": str(landlord_id), "tenant_id": str(tenant_id)}
        payments.append((tenant_id, pi_id, amount))
        roll = rng.random()
        events.append(
            _event(
                len(events), "payment_intent.processing", _pi(pi_id, amount, "processing", meta), t
            )
        )
        if roll < 0.2:
            error = {
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds.",
            }
            pi = _pi(pi_id, amount, "requires_payment_method", meta, error=error)
            events.append(_event(len(events), "payment_intent.payment_failed", pi, t + 1))
            continue
        fee = 25 + amount * 14 // 1000
        pi = _pi(
            pi_id, amount, "succeeded", meta, charge=_charge(charge_id, pi_id, amount, fee=fee)
        )
        events.append(_event(len(events), "payment_intent.succeeded", pi, t + 1))
        if roll > 0.85:
            refund = {
                "id": f"re_bench{n:07d}",
                "object": "refund",
                "amount": amount // 2,
                "charge": charge_id,
                "currency": "eur",
                "status": "succeeded",
            }
            charge = _charge(charge_id, pi_id, amount, refunds=[refund])
            events.append(_event(len(events), "charge.refunded", charge, t + 2))
    return events[:distinct], payments


def _payments_create(landlord_id: int, payments: list[tuple]) -> None:
    from payments.models import Method, Payment, Source

    Payment.objects.bulk_create(
        [
            Payment(
                landlord_id=landlord_id,
                tenant_id=tenant_id,
                amount_minor=amount,
                currency="EUR",
                method=Method.CARD,
                source=Source.STRIPE,
                stripe_payment_intent_id=pi_id,
                idempotency_key=f"bench:{pi_id}",
            )
            for tenant_id, pi_id, amount in payments
        ],
        batch_size=2_000,
    )


# --- servers ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    def __init__(self, *, env: dict, workers: int, threads: int, log_path: Path):
        self.port = _free_port()
        self.log_path = log_path
        cmd = [
            str(Path(sys.executable).with_name("gunicorn")),
            "billing_site.wsgi",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(workers),
        ]
        if threads:
            cmd += ["--worker-class", "gthread", "--threads", str(threads)]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            cmd,
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.log_path}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", path)
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"gunicorn not ready after {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- sending --------------------------------------------------------------------------


def _sign(body: bytes, secret: str) -> str:
    t = int(time.time())
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def _response_read(sock: socket.socket) -> tuple[int, bool]:
    """Read one HTTP/1.1 response from `sock`: (status, whether the server closes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response headers")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    close = headers.get(b"connection") == b"close" or lines[0].startswith(b"HTTP/1.0")
    if headers.get(b"transfer-encoding") == b"chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed inside a chunked body")
            rest += chunk
    else:
        length = int(headers.get(b"content-length", b"0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed inside the body")
            rest += chunk
    return status, close


class _Sender(threading.Thread):
    """One closed-loop sender on one keep-alive connection.

    HTTP/1.1 over a plain socket, not `http.client`: the load generator shares the two
    cores with the server it measures, and `http.client` spent ~0.44 ms of CPU per
    request (this client ~0.15 ms), a tenth of the box at this rate. It writes the
    request in one `sendall` and reads only the status line, `Content-Length` /
    `Transfer-Encoding` and `Connection`."""

    def __init__(self, *, port: int, path: str, bodies: list[bytes], secret: str, deadline: float):
        super().__init__(daemon=True)
        self.port, self.path, self.bodies, self.secret = port, path, bodies, secret
        self.deadline = deadline
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.sock: socket.socket | None = None
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        ).encode()

    def _close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _post(self, body: bytes) -> int:
        request = b"".join(
            (
                self._head,
                b"Content-Length: %d\r\nStripe-Signature: " % len(body),
                _sign(body, self.secret).encode(),
                b"\r\n\r\n",
                body,
            )
        )
        for attempt in range(2):
            fresh = self.sock is None
            if fresh:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.sock.sendall(request)
                status, close = _response_read(self.sock)
            except TimeoutError:
                self._close()
                raise
            except (ConnectionError, ValueError):
                self._close()
                if attempt or fresh:
                    raise
                continue  # the server closed an idle keep-alive connection: once more
            if close:
                self._close()
            return status
        raise AssertionError("unreachable")

    def run(self) -> None:
        for body in self.bodies:
            if time.monotonic() > self.deadline:
                self.errors += 1
                continue
            started = time.perf_counter()
            try:
                status = self._post(body)
            except Exception:
                self.errors += 1
                continue
            self.latencies.append(time.perf_counter() - started)
            self.statuses[status] = self.statuses.get(status, 0) + 1
        self._close()


def _send(*, port: int, path: str, bodies: list[bytes], senders: int, secret: str, timeout: float):
    deadline = time.monotonic() + timeout
    threads = [
        _Sender(port=port, path=path, bodies=bodies[i::senders], secret=secret, deadline=deadline)
        for i in range(senders)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    latencies = sorted(x for t in threads for x in t.latencies)
    statuses: dict[int, int] = {}
    for t in threads:
        for status, count in t.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    return {
        "started": started,
        "seconds": seconds,
        "per_s": len(latencies) / seconds if seconds else 0.0,
        "p50_ms": _pct(latencies, 0.50),
        "p95_ms": _pct(latencies, 0.95),
        "p99_ms": _pct(latencies, 0.99),
        "statuses": statuses,
        "exceptions": sum(t.errors for t in threads),
    }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)


# --- the benchmark ------------------------------------------------------------------


def run(
    *,
    events: int,
    tenants: int,
    senders: int,
    web_workers: int,
    web_threads: int,
    concurrency: int,
    duplicates: float,
    baseline: int,
    timeout: float,
    database: str,
    redis_db: int,
    seed: int,
    db_reuse_max: int | None = None,
    **_options,
) -> dict:
    settings.DEBUG = False
    rng = random.Random(seed)
    broker = redis_url(redis_db)
    celery_use_broker(broker)
    phases: dict[str, float] = {}

    database_drop(database)
    with timed("migrate", phases):
        database_ensure(database)
    with timed("dataset", phases):
        landlord_id, tenant_ids = _dataset(tenants)
        distinct = max(1, round(events * (1 - duplicates)))
        event_list, payments = _events(
            distinct, landlord_id=landlord_id, tenant_ids=tenant_ids, rng=rng
        )
        _payments_create(landlord_id, payments)
        # Statistics, as a database in service has them: without, the planner takes
        # every freshly loaded table for empty and looks keys up by the landlord
        # alone (e.g. a ledger key among all the landlord's transactions).
        with raw_cursor() as cur:
            cur.execute("ANALYZE")
        bodies = [json.dumps(e).encode() for e in event_list]
        deliveries = bodies + [rng.choice(bodies) for _ in range(events - len(bodies))]
        rng.shuffle(deliveries)

    env = {k: v for k, v in os.environ.items() if k != "STRIPE_API_KEY"}
    env |= {
        "DATABASE_URL": database_url(database),
        "REDIS_URL": broker,
        "DEBUG": "false",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_API_BASE": "http://127.0.0.1:9",  # nothing listens: no Stripe call expected
        "STRIPE_CONNECT_REQUIRED": "false",
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "LOG_LEVEL": "WARNING",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    os.environ.update({k: env[k] for k in ("STRIPE_API_BASE", "STRIPE_CONNECT_REQUIRED")})
    os.environ.pop("STRIPE_API_KEY", None)
    out_dir = Path(settings.BASE_DIR) / ".data" / "bench"
    worker = CeleryWorker(
        database=database,
        broker_url=broker,
        concurrency=concurrency,
        log_path=out_dir / "webhooks-worker.log",
        db_reuse_max=db_reuse_max,
    )
    web = Gunicorn(
        env=env, workers=web_workers, threads=web_threads, log_path=out_dir / "webhooks-web.log"
    )
    path = reverse("stripe-webhook")
    worker.start()
    try:
        web.wait_ready(path)
        worker.wait_ready()

        base = None
        if baseline:
            sample = deliveries[:baseline]
            base = _send(
                port=web.port,
                path=path,
                bodies=sample,
                senders=senders,
                secret="whsec_wrong",
                timeout=timeout,
            )
            log(f"baseline (bad signature): {base['per_s']:.0f}/s, p95 {base['p95_ms']} ms")

        log(f"posting {len(deliveries)} deliveries ({distinct} events) from {senders} threads")
        ingest = _send(
            port=web.port,
            path=path,
            bodies=deliveries,
            senders=senders,
            secret=SECRET,
            timeout=timeout,
        )
        log(f"ingest: {ingest['per_s']:.0f}/s, p95 {ingest['p95_ms']} ms, {ingest['statuses']}")

        with raw_cursor() as cur:
            while True:
                left = cur.execute(
                    "SELECT count(*) FILTER (WHERE status = 'received'), count(*) "
                    "FROM payments_stripeevent"
                ).fetchone()
                if left[0] == 0:
                    break
                if time.perf_counter() - ingest["started"] > timeout:
                    raise RuntimeError(f"timed out: {left[0]} of {left[1]} events unprocessed")
                worker.check_alive()
                time.sleep(0.05)
        process_seconds = time.perf_counter() - ingest["started"]
        processing_lag = process_seconds - ingest["seconds"]
        log(f"processed {left[1]} events in {process_seconds:.2f} s from the first POST")
        checks = _checks(landlord_id, distinct)
    finally:
        web.stop()
        worker.stop()

    ok_deliveries = sum(c for s, c in ingest["statuses"].items() if 200 <= s < 300)
    stored = checks.pop("stored")
    result = {
        "bench": "webhooks",
        "events": len(deliveries),
        "distinct_events": distinct,
        "duplicates_sent": len(deliveries) - distinct,
        "ingest_per_s": round(ingest["per_s"]),
        "ingest_p50_ms": ingest["p50_ms"],
        "ingest_p95_ms": ingest["p95_ms"],
        "ingest_p99_ms": ingest["p99_ms"],
        "ingest_seconds": round(ingest["seconds"], 2),
        "process_per_s": round(stored / process_seconds),
        "process_seconds_from_first_post": round(process_seconds, 2),
        "processing_lag_after_ingest_s": round(processing_lag, 2),
        "duplicates_ignored": ok_deliveries - stored,
        "errors": ingest["exceptions"]
        + sum(c for s, c in ingest["statuses"].items() if not 200 <= s < 300),
        "statuses": {str(k): v for k, v in sorted(ingest["statuses"].items())},
        "checks": checks,
        "senders": senders,
        "web": f"gunicorn --workers {web_workers}"
        + (f" --worker-class gthread --threads {web_threads}" if web_threads else " (sync)"),
        "worker_concurrency": concurrency,
        "worker_db_reuse_max": db_reuse_max,
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "phase_seconds": phases,
        "database": database,
    }
    if base is not None:
        result |= {
            "baseline_bad_signature_per_s": round(base["per_s"]),
            "baseline_bad_signature_p95_ms": base["p95_ms"],
            "baseline_bad_signature_statuses": {str(k): v for k, v in base["statuses"].items()},
        }
    return result


def _checks(landlord_id: int, distinct: int) -> dict:
    from ledger.selectors import ledger_verify, trial_balance
    from tenants.models import Landlord

    with raw_cursor() as cur:
        rows = dict(
            cur.execute("SELECT status, count(*) FROM payments_stripeevent GROUP BY status")
        )
        posted = cur.execute(
            "SELECT count(*) FROM payments_payment WHERE posting_id IS NOT NULL"
        ).fetchone()[0]
    landlord = Landlord.objects.get(pk=landlord_id)
    stored = sum(rows.values())
    checks = {
        "stored": stored,
        "event_statuses": rows,
        "payments_posted": posted,
        "one_row_per_event": stored == distinct,
        "none_failed": not rows.get("failed") and not rows.get("unmatched"),
        "trial_balance_zero": trial_balance(landlord=landlord).is_balanced,
        "ledger_verified": ledger_verify(landlord=landlord).ok,
    }
    checks["ok"] = all(
        checks[k]
        for k in ("one_row_per_event", "none_failed", "trial_balance_zero", "ledger_verified")
    )
    return checks
