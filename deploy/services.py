"""Make sure PostgreSQL and Redis are reachable and record where they are in `.env`.

Order of preference for each service:
1. the URL given in the environment (DATABASE_URL / REDIS_URL);
2. the URL already recorded in `.env`, if it still answers;
3. a server answering on the standard local port (5432 / 6379);
4. a private server under `.data/` on ports 55432 / 56379, installed from Debian's
   packages (deploy/apt/services.txt) and started when needed.

Idempotent: running it again reuses whatever answers. Only the standard library is
needed up to the point where psycopg (from the venv) creates the database.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
RUN = DATA / "run"
ENV_FILE = ROOT / ".env"
PRIVATE_PG_PORT = 55432
PRIVATE_REDIS_PORT = 56379
DB_NAME = "rentledger"
PRIVATE_PG_URL = f"postgres://postgres@127.0.0.1:{PRIVATE_PG_PORT}/{DB_NAME}"
PRIVATE_REDIS_URL = f"redis://127.0.0.1:{PRIVATE_REDIS_PORT}/0"


def log(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def url_answers(url: str) -> bool:
    parts = urlsplit(url)
    default = 5432 if parts.scheme.startswith("postgres") else 6379
    return answers(parts.hostname or "127.0.0.1", parts.port or default)


def read_env() -> dict[str, str]:
    values: dict[str, str] = {}
    if ENV_FILE.exists():
        for line in ENV_FILE.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


def write_env(values: dict[str, str]) -> None:
    lines = ["# Written by deploy/services.py; safe to edit, kept across runs."]
    lines += [f"{key}={value}" for key, value in values.items()]
    ENV_FILE.write_text("\n".join(lines) + "\n")


def as_root(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return cmd
    if shutil.which("sudo"):
        return ["sudo", *cmd]
    sys.exit(f"need root for: {' '.join(cmd)}")


def apt_install(*packages: str) -> None:
    missing = [
        p
        for p in packages
        if subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True
        ).stdout.find("install ok installed")
        < 0
    ]
    if not missing:
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    subprocess.run(as_root(["apt-get", "update", "-qq"]), check=True)
    subprocess.run(
        as_root(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]),
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        stdout=subprocess.DEVNULL,
    )


def wait_for(host: str, port: int, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers(host, port):
            return
        time.sleep(0.1)
    sys.exit(f"{what} did not start on {host}:{port}; see {RUN}")


def pg_bin() -> Path:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
    )
    if not candidates:
        sys.exit("PostgreSQL server binaries not found under /usr/lib/postgresql")
    return candidates[-1]


def pg_data_dir(run_as: str | None) -> Path:
    """`.data/pg`, unless the server's user cannot reach the checkout.

    PostgreSQL refuses to run as root, so as root we run it as `postgres`; when the
    checkout sits under a private home (e.g. /root) that user cannot traverse to it,
    so the cluster lives under /var/tmp and `.data/pg` points there.
    """
    target = DATA / "pg"
    if run_as is None or target.is_symlink():
        return target
    probe = subprocess.run(["runuser", "-u", run_as, "--", "test", "-x", str(DATA)])
    if probe.returncode == 0:
        return target
    outside = Path("/var/tmp") / f"rentledger-{hashlib.sha1(bytes(ROOT)).hexdigest()[:10]}"
    outside.mkdir(parents=True, exist_ok=True)
    shutil.chown(outside, run_as, run_as)
    target.symlink_to(outside)
    return target


def start_private_postgres() -> str:
    apt_install("postgresql")
    RUN.mkdir(parents=True, exist_ok=True)
    run_as = "postgres" if os.geteuid() == 0 else None
    pgdata = pg_data_dir(run_as)
    sockdir = pgdata.resolve().parent / "pgsock" if pgdata.is_symlink() else RUN
    sockdir.mkdir(parents=True, exist_ok=True)
    pgdata.resolve().mkdir(parents=True, exist_ok=True)

    def cmd(*args: str) -> list[str]:
        return ["runuser", "-u", run_as, "--", *args] if run_as else list(args)

    if run_as:
        uid = pwd.getpwnam(run_as).pw_uid
        for p in (pgdata.resolve(), sockdir):
            os.chown(p, uid, -1)
        os.chmod(RUN, 0o777)  # the postgres user writes its log here
    binary = pg_bin()
    if not (pgdata / "PG_VERSION").exists():
        log(f"initialising a private PostgreSQL cluster in {pgdata}")
        subprocess.run(
            cmd(str(binary / "initdb"), "-D", str(pgdata.resolve()), "-U", "postgres",
                "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8"),
            check=True, stdout=subprocess.DEVNULL,
        )
    log(f"starting private PostgreSQL on 127.0.0.1:{PRIVATE_PG_PORT}")
    subprocess.run(
        cmd(str(binary / "pg_ctl"), "-D", str(pgdata.resolve()), "-l", str(RUN / "pg.log"),
            "-w", "-t", "30", "-o", f"-h 127.0.0.1 -p {PRIVATE_PG_PORT} -k {sockdir}", "start"),
        check=True, stdout=subprocess.DEVNULL,
    )
    wait_for("127.0.0.1", PRIVATE_PG_PORT, "PostgreSQL")
    return PRIVATE_PG_URL


def start_private_redis() -> str:
    apt_install("redis-server")
    RUN.mkdir(parents=True, exist_ok=True)
    log(f"starting private Redis on 127.0.0.1:{PRIVATE_REDIS_PORT}")
    subprocess.run(
        ["redis-server", "--port", str(PRIVATE_REDIS_PORT), "--bind", "127.0.0.1",
         "--daemonize", "yes", "--save", "", "--appendonly", "no", "--dir", str(RUN),
         "--pidfile", str(RUN / "redis.pid"), "--logfile", str(RUN / "redis.log")],
        check=True,
    )
    wait_for("127.0.0.1", PRIVATE_REDIS_PORT, "Redis")
    return PRIVATE_REDIS_URL


def choose(name: str, recorded: dict[str, str], standard: str, private: str, start) -> str:
    if os.environ.get(name):
        return os.environ[name]
    if recorded.get(name) and url_answers(recorded[name]):
        return recorded[name]
    for url in (standard, private):  # a shared server, or ours from an earlier run
        if url_answers(url):
            return url
    return start()


def ensure_database(url: str) -> None:
    import psycopg  # from the venv

    parts = urlsplit(url)
    name = parts.path.lstrip("/") or DB_NAME
    admin = url.replace(parts.path, "/postgres", 1) if parts.path else url + "/postgres"
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            log(f"creating database {name}")
            conn.execute(f'CREATE DATABASE "{name}"')


def main() -> None:
    recorded = read_env()
    db_url = choose(
        "DATABASE_URL", recorded, f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
        PRIVATE_PG_URL, start_private_postgres,
    )
    redis_url = choose(
        "REDIS_URL", recorded, "redis://127.0.0.1:6379/0", PRIVATE_REDIS_URL, start_private_redis
    )
    ensure_database(db_url)
    values = dict(recorded)
    values["DATABASE_URL"] = db_url
    values["REDIS_URL"] = redis_url
    values.setdefault("SECRET_KEY", secrets.token_urlsafe(48))
    values.setdefault("DEBUG", "true")
    if values != recorded:
        write_env(values)
    log(f"PostgreSQL: {db_url}")
    log(f"Redis:      {redis_url}")


if __name__ == "__main__":
    main()
