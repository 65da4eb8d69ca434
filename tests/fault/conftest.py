"""Fixtures for fault tests: a real Celery worker (a subprocess) on the test database and a
dedicated Redis database, so a developer's worker on the usual broker never sees our tasks."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import redis
from django.conf import settings
from django.db import connection
from kombu import pools as kombu_pools

from billing_site.celery import app as celery_app

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Redis database for the fault test's broker; the app's own broker and cache use db 0.
FAULT_REDIS_DB = int(os.environ.get("FAULT_REDIS_DB", "9"))
QUEUE = "celery"
READY_TIMEOUT = 60.0


def _redis_url_with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def _purge(client: redis.Redis) -> None:
    """Delete kombu's keys (queue, unacked hash and index, bindings) in our database only."""
    for pattern in (f"{QUEUE}*", "unacked*", "_kombu.binding*", "*.reply.celery.pidbox"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)


def _reset_producer_pool() -> None:
    """Drop every pooled broker connection so the next publish opens a fresh one for the
    current broker_url. kombu keeps pools in a process-wide registry keyed by connection,
    so closing the app's pool alone would leave a closed pool there for later tests
    (Celery acquires a producer even in eager mode)."""
    pool = celery_app._pool
    if pool is not None:
        pool.force_close_all()
    celery_app._pool = None
    amqp = celery_app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None
    kombu_pools.reset()


@dataclass
class FaultBroker:
    url: str
    client: redis.Redis

    def queue_length(self) -> int:
        return int(self.client.llen(QUEUE))

    def unacked(self) -> set[str]:
        """Delivery tags of messages handed to a worker and never acknowledged (a
        SIGKILLed worker leaves its running and prefetched tasks here)."""
        return {tag.decode() for tag in self.client.hkeys("unacked")}

    def expire_visibility(self, tags: set[str]) -> int:
        """Hand these unacknowledged messages back to the queue, as the Redis transport
        does once the visibility timeout has passed; returns how many."""
        with celery_app.connection_for_write() as conn:
            qos = conn.default_channel.qos
            for tag in sorted(tags):
                qos.restore_by_tag(tag)
        return len(tags)

    def purge(self) -> None:
        _purge(self.client)


@pytest.fixture
def fault_broker():
    """Publish from this process to a dedicated Redis database, for real (not eagerly)."""
    url = _redis_url_with_db(settings.REDIS_URL, FAULT_REDIS_DB)
    client = redis.Redis.from_url(url)
    client.ping()
    _purge(client)
    saved = (celery_app.conf.broker_url, celery_app.conf.task_always_eager)
    celery_app.conf.broker_url = url
    celery_app.conf.task_always_eager = False
    _reset_producer_pool()
    try:
        yield FaultBroker(url=url, client=client)
    finally:
        _reset_producer_pool()
        celery_app.conf.broker_url, celery_app.conf.task_always_eager = saved
        _purge(client)
        client.close()


def _database_url() -> str:
    """The database this test runs on (pytest-django's test database, xdist suffix included)."""
    s = connection.settings_dict
    user = quote(s.get("USER") or "", safe="")
    password = quote(s.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = quote(s.get("HOST") or "", safe="")
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{quote(s['NAME'], safe='')}"


@dataclass
class WorkerProcess:
    """`celery worker` in its own session: one SIGKILL to the group kills the main
    process and every pool child at once, like a lost machine or an OOM kill."""

    env: dict[str, str]
    log_dir: Path
    concurrency: int = 2
    proc: subprocess.Popen | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        assert self.proc is None, "worker already running"
        self.starts += 1
        log = self.log_dir / f"worker-{self.starts}.log"
        self.logs.append(log)
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "billing_site",
            "worker",
            "--pool=prefork",
            f"--concurrency={self.concurrency}",
            "-Q",
            QUEUE,
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
            "-n",
            f"fault-{uuid.uuid4().hex[:8]}@%h",
        ]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        """Block until the worker logs that it consumes; returns the seconds it took."""
        assert self.proc is not None
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            if b" ready." in self.logs[-1].read_bytes():
                return time.monotonic() - began
            time.sleep(0.05)
        raise AssertionError(f"worker not ready after {timeout} s:\n{self.tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (main process and pool children)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def tail(self, lines: int = 60) -> str:
        if not self.logs:
            return ""
        text = self.logs[-1].read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def errors(self) -> list[str]:
        """Task failures and retries logged by any incarnation of the worker."""
        found = []
        for log in self.logs:
            for line in log.read_text(errors="replace").splitlines():
                if "ERROR" in line or "Retry in" in line or "raised unexpected" in line:
                    found.append(f"{log.name}: {line}")
        return found


@pytest.fixture
def celery_worker_process(fault_broker):
    """A factory-started real worker on the test database and the fault broker; whatever
    happens, its process group is killed at teardown."""
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "REDIS_URL": fault_broker.url,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "DJANGO_SETTINGS_MODULE": "billing_site.settings",
        "PYTHONUNBUFFERED": "1",
    }
    # Not tmp_path: pytest prunes old base temp dirs, and a concurrent pytest run would
    # delete the logs under a running worker. Failures quote the log tail themselves.
    log_dir = Path(tempfile.mkdtemp(prefix="rentledger-fault-"))
    worker = WorkerProcess(env=env, log_dir=log_dir)
    try:
        yield worker
    finally:
        worker.kill()
        shutil.rmtree(log_dir, ignore_errors=True)
