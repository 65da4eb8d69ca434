"""Plumbing shared by benchmarks: a dedicated database, a real Celery worker, RSS.

Benchmarks write into their own database (`rentledger_bench` by default) so the dev
database stays clean and a reset is `DROP DATABASE`. The switch happens before the
command touches the database: the default connection's settings are repointed, and
the worker subprocess gets the same database through `DATABASE_URL`.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections
from psycopg import sql

BENCH_DATABASE = "rentledger_bench"
BENCH_REDIS_DB = 15


def log(message: str) -> None:
    """Progress goes to stderr so stdout carries only the result."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@contextmanager
def timed(label: str, into: dict[str, float] | None = None):
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    if into is not None:
        into[label] = round(elapsed, 3)
    log(f"{label}: {elapsed:.2f} s")


# --- database ---------------------------------------------------------------------


def _admin_connect() -> psycopg.Connection:
    params = connection.get_connection_params()
    params["dbname"] = "postgres"
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    return psycopg.connect(**params, autocommit=True)


def database_url(name: str) -> str:
    """The dev `DATABASE_URL` with another database name (for the worker's environment)."""
    s = connection.settings_dict
    auth = s["USER"] or ""
    if s["PASSWORD"]:
        auth += f":{s['PASSWORD']}"
    host = s["HOST"] or "127.0.0.1"
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"postgres://{auth}@{host}{port}/{name}"


def database_use(name: str) -> None:
    """Point the default connection (and so every query of this process) at `name`."""
    connections.close_all()
    connection.settings_dict["NAME"] = name


def database_drop(name: str) -> None:
    with _admin_connect() as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def migrations_fingerprint() -> str:
    """Hash of every migration file: migrations edited in place (this project's work in
    progress does that) are not re-applied by `migrate`, so a changed fingerprint means
    the bench database must be rebuilt to have the current schema and triggers."""
    digest = hashlib.sha256()
    base = Path(settings.BASE_DIR)
    # db_references generates SQL that migrations run.
    paths = [*base.glob("*/migrations/[0-9]*.py"), base / "billing_site" / "db_references.py"]
    for path in sorted(paths):
        digest.update(path.relative_to(base).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def database_ensure(name: str) -> bool:
    """Create and migrate `name` if needed, then use it. True if it was (re)created.

    The database's comment records the migrations it was built from; if they changed
    since, it is dropped and built again.
    """
    fingerprint = f"rentledger bench, migrations {migrations_fingerprint()}"
    with _admin_connect() as admin:
        row = admin.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            [name],
        ).fetchone()
        if row is not None and row[0] != fingerprint:
            log(f"migrations changed since {name} was built: rebuilding it")
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            row = None
        if row is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_use(name)
    call_command("migrate", interactive=False, verbosity=0)
    if row is None:
        with _admin_connect() as admin:
            admin.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    sql.Identifier(name), sql.Literal(fingerprint)
                )
            )
    return row is None


def raw_cursor() -> psycopg.Cursor:
    """A psycopg cursor on Django's connection (same transaction), without the debug wrapper."""
    connection.ensure_connection()
    return connection.connection.cursor()


# --- Celery worker ----------------------------------------------------------------


def redis_url(db: int) -> str:
    parts = urlsplit(settings.REDIS_URL)
    return urlunsplit(parts._replace(path=f"/{db}"))


def celery_use_broker(url: str) -> None:
    """Publish this process's tasks to `url` (the bench worker's broker, not the dev one)."""
    from bench.worker import app

    app.conf.broker_url = url
    app.conf.task_always_eager = False


class CeleryWorker:
    """A real worker subprocess, started like deploy/run.py starts it (prefork), with the
    bench database and broker in its environment."""

    def __init__(
        self,
        *,
        database: str,
        broker_url: str,
        concurrency: int,
        log_path: Path,
        db_reuse_max: int | None = None,
    ):
        self.database = database
        self.db_reuse_max = db_reuse_max
        self.broker_url = broker_url
        self.concurrency = concurrency
        self.log_path = log_path
        self.nodename = f"bench-{os.getpid()}@localhost"
        self.proc: subprocess.Popen | None = None
        self._peaks: dict[int, int] = {}

    def start(self) -> None:
        self.purge()
        env = {
            **os.environ,
            "DATABASE_URL": database_url(self.database),
            "REDIS_URL": self.broker_url,
            "DEBUG": "false",
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
            "LOG_LEVEL": "WARNING",
        }
        if self.db_reuse_max:
            env["BENCH_DB_REUSE_MAX"] = str(self.db_reuse_max)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = self.log_path.open("w")
        cmd = [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "bench.worker",
            "worker",
            "--pool=prefork",
            f"--concurrency={self.concurrency}",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            self.nodename,
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=settings.BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def purge(self) -> None:
        """Empty the bench broker's queues (leftovers of an interrupted run)."""
        from bench.worker import NOTIFICATIONS_QUEUE, app

        app.control.purge()
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(NOTIFICATIONS_QUEUE)

    def wait_ready(self, timeout: float = 60) -> None:
        from billing_site.celery import app

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if app.control.ping(destination=[self.nodename], timeout=0.5):
                return
        raise RuntimeError(f"worker not ready after {timeout:.0f} s; see {self.log_path}")

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"worker exited; see {self.log_path}")

    def sample_rss(self) -> None:
        """Record each worker process's peak RSS (VmHWM) while it is alive."""
        if self.proc is None:
            return
        for pid in [self.proc.pid, *_children(self.proc.pid)]:
            peak = _vm_hwm_kb(pid)
            if peak:
                self._peaks[pid] = max(self._peaks.get(pid, 0), peak)

    @property
    def peak_rss_kb(self) -> dict[int, int]:
        return dict(self._peaks)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.sample_rss()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.purge()


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def process_cpu_seconds(pid: int, *, exited_children: bool = False) -> float:
    """User + system CPU time of a live process (0 if it is gone), or with
    `exited_children` that of its children that have exited (and been waited for)."""
    fields = _stat(pid)
    if not fields:
        return 0.0
    first = 13 if exited_children else 11
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds spent by this process, the worker's processes and the PostgreSQL
    backends serving `database`, between `start()` and `stop()`. Unlike wall time it
    hardly depends on what else the (shared) machine is doing."""

    def __init__(self, *, worker: CeleryWorker, database: str):
        self.worker = worker
        self.database = database
        self._start: dict[str, dict[int, float]] = {}
        self.seconds: dict[str, float] = {}

    def _sample(self) -> dict[str, dict[int, float]]:
        worker = self.worker.proc
        pids = [worker.pid, *_children(worker.pid)] if worker else []
        with raw_cursor() as cur:
            backends = [
                row[0]
                for row in cur.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.database]
                )
            ]
            postmaster = int(_stat(cur.execute("SELECT pg_backend_pid()").fetchone()[0])[1])
        return {
            "bench": {os.getpid(): sum(resource.getrusage(resource.RUSAGE_SELF)[:2])},
            "worker": {pid: process_cpu_seconds(pid) for pid in pids},
            "postgres": {pid: process_cpu_seconds(pid) for pid in backends},
            # Backends that ended meanwhile: the worker's, when Celery closes its
            # connection after every task (and those of any other database).
            "postgres_exited_any_database": {
                postmaster: process_cpu_seconds(postmaster, exited_children=True)
            },
        }

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> dict[str, float]:
        end = self._sample()
        self.seconds = {
            kind: round(sum(t - self._start[kind].get(pid, 0.0) for pid, t in end[kind].items()), 2)
            for kind in end
        }
        self.seconds["total"] = round(sum(self.seconds.values()), 2)
        return self.seconds


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with suppress(OSError):
            found += [int(c) for c in task.read_text().split()]
    return found


def _vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def self_peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
