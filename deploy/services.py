"""Make sure PostgreSQL and Redis are reachable and record where they are in `.env`.

Order of preference for each service:
1. the URL given in the environment (DATABASE_URL / REDIS_URL);
2. the URL already recorded in `.env`, if we can log in to it (PING it, for Redis);
3. a server on the standard local port (5432 / 6379) that we can log in to;
4. this checkout's private server under `.data/`, started when needed, on the first
   free port from 55432 (PostgreSQL) / 56379 (Redis). The Debian packages in
   deploy/apt/services.txt are installed the first time one is needed.

Once `.env` records a private server (a 127.0.0.1 URL in the private port ranges
55432-55451 / 56379-56398), later runs stick to it: a stopped one (after a reboot, say)
is started again from its existing data, never re-initialised, even if a standard server
has appeared meanwhile. To switch back, delete the line from `.env`.

RENTLEDGER_PRIVATE_SERVICES=1 forces step 4 for both services: DATABASE_URL / REDIS_URL
in the environment, a non-private URL in `.env` and the standard ports are ignored.
Use it to test the fresh-machine path on a machine that already runs the services.
Note that Django's settings prefer the environment over `.env`, so unset DATABASE_URL /
REDIS_URL in the shell as well when forcing.

Several checkouts on one machine each get their own private servers: a server is this
checkout's when its pid file (`.data/pg/postmaster.pid`, `.data/run/redis.pid`) names a
live process; any other listener on a port (another checkout's server, or anything
else) makes us take the next free port, and `.env` records the port in use.

Layout: the PostgreSQL cluster is `.data/pg` with its log at `.data/run/pg.log`; Redis
keeps its config, pid file and log in `.data/run` (it persists nothing: dev broker and
cache only). As root the cluster runs as the `postgres` user (PostgreSQL refuses root);
if that user cannot traverse the checkout (e.g. it lives under /root), the cluster and
its log live in /var/tmp/rentledger-<hash of the checkout path>/ instead, and
`.data/pg` and `.data/run/pg.log` are symlinks to them. Unix sockets are disabled: all
clients use TCP on 127.0.0.1, which avoids socket-path length and permission problems.

`deploy/services.py --stop` stops this checkout's private servers (data is kept); stop
them before deleting `.data`, or they run on, orphaned, holding their ports.

Idempotent: running it again reuses whatever runs. Only the standard library is
needed, apart from psycopg (from the venv) for logging in and creating the database.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
RUN = DATA / "run"
ENV_FILE = ROOT / ".env"
SERVICE_PACKAGES = ROOT / "deploy" / "apt" / "services.txt"
DB_NAME = "rentledger"
PG_BASE_PORT = 55432
REDIS_BASE_PORT = 56379
PORT_SPAN = 20  # private servers use base .. base + PORT_SPAN - 1
STANDARD_PG_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
STANDARD_REDIS_URL = "redis://127.0.0.1:6379/0"
FORCE_VAR = "RENTLEDGER_PRIVATE_SERVICES"
REDIS_CONF = RUN / "redis.conf"
REDIS_PID = RUN / "redis.pid"


def log(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def forced() -> bool:
    return os.environ.get(FORCE_VAR, "").strip().lower() in {"1", "true", "yes", "on"}


# --- small helpers -------------------------------------------------------------------


def port_free(port: int) -> bool:
    """True if a server could bind 127.0.0.1:port (nothing listens there).

    SO_REUSEADDR as the servers themselves use it, so a port left in TIME_WAIT by a
    stopped server still counts as free.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(base: int, preferred: int | None) -> int:
    """The preferred port if free, else the first free one in the private range."""
    candidates = range(base, base + PORT_SPAN)
    if preferred in candidates and port_free(preferred):
        return preferred
    for port in candidates:
        if port_free(port):
            return port
    sys.exit(f"no free port in {base}-{base + PORT_SPAN - 1} for a private server")


def private_port(url: str | None, base: int) -> int | None:
    """The port of `url` if it names a private server (ours, by the convention above)."""
    if not url:
        return None
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.hostname in {"127.0.0.1", "localhost"} and port in range(base, base + PORT_SPAN):
        return port
    return None


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def proc_state(pid: int | None, program: str) -> str | None:
    """The state letter (R, S, Z...) of process `pid` if it exists and is `program`.

    The name check matters after a reboot, when a stale pid file may name an unrelated
    process that got the same pid.
    """
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()  # "pid (comm) state ..."
    except OSError:
        return None
    comm, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
    return state if comm.startswith(program) else None


def live_pid(pid_file: Path, program: str) -> int | None:
    """The pid in the file if it names a running `program` (a zombie is not running)."""
    pid = read_pid(pid_file)
    return pid if proc_state(pid, program) not in {None, "Z"} else None


def wait_for_reaping(pid_file: Path, program: str) -> None:
    """Wait while the file names a zombie `program`.

    A server killed outright stays a zombie until its parent (init, after the
    daemonising fork) reaps it, which some container inits do lazily; until then
    PostgreSQL takes the stale postmaster.pid for a live server and refuses to start.
    """
    pid = read_pid(pid_file)
    wait_until(lambda: proc_state(pid, program) != "Z", 15)


def redact(url: str) -> str:
    """`url` with any password masked, for logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def wait_until(check: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


# --- .env -----------------------------------------------------------------------------


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


# --- Debian packages ------------------------------------------------------------------


def as_root(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return cmd
    if shutil.which("sudo"):
        return ["sudo", *cmd]
    sys.exit(f"need root (or sudo) for: {' '.join(cmd)}")


_packages_checked = False


def install_service_packages() -> None:
    """Install the missing packages of deploy/apt/services.txt (once per run)."""
    global _packages_checked
    if _packages_checked:
        return
    _packages_checked = True
    if not shutil.which("dpkg-query") or not shutil.which("apt-get"):
        return  # not Debian: the binaries must already be there (checked when used)
    wanted = SERVICE_PACKAGES.read_text().split("\n")
    packages = [w.split("#")[0].strip() for w in wanted if w.split("#")[0].strip()]
    missing = [
        p
        for p in packages
        if "install ok installed"
        not in subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True
        ).stdout
    ]
    if not missing:
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    # bootstrap.sh sets RENTLEDGER_APT_UPDATED when it already refreshed the lists.
    if not os.environ.get("RENTLEDGER_APT_UPDATED"):
        subprocess.run(as_root(["apt-get", "update", "-qq"]), check=True)
    # `env` rather than Popen's env=: sudo drops the caller's environment.
    subprocess.run(
        as_root(
            ["env", "DEBIAN_FRONTEND=noninteractive"]
            + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )


# --- private PostgreSQL ---------------------------------------------------------------


def pg_run_as() -> str | None:
    """The user the private cluster runs as: `postgres` when we are root, else us."""
    return "postgres" if os.geteuid() == 0 else None


def pg_cmd(*args: str) -> list[str]:
    run_as = pg_run_as()
    return ["runuser", "-u", run_as, "--", *args] if run_as else list(args)


def pg_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if candidates:
        return candidates[-1]  # Debian's layout; the newest installed major version
    initdb = shutil.which("initdb") or shutil.which("pg_ctl")
    if initdb:
        return Path(initdb).parent
    sys.exit("PostgreSQL server binaries (initdb, pg_ctl) not found")


def outside_dir() -> Path:
    """Where the cluster lives when the server's user cannot reach the checkout."""
    digest = hashlib.sha1(bytes(ROOT)).hexdigest()[:10]
    return Path("/var/tmp") / f"rentledger-{digest}"


def pg_data_dir() -> Path:
    """`.data/pg`, made usable by the server's user.

    If that user cannot traverse to `.data` (a checkout under a private home such as
    /root), the cluster lives in outside_dir()/pg and `.data/pg` is a symlink to it.
    An existing symlink is kept, whatever the checkout's permissions are now.
    """
    target = DATA / "pg"
    run_as = pg_run_as()
    if target.is_symlink() or run_as is None:
        return target
    # `test -x` runs access(2) as that user, which checks every directory above too.
    probe = subprocess.run(["runuser", "-u", run_as, "--", "test", "-x", str(DATA)], cwd="/")
    if probe.returncode == 0:
        return target
    if (target / "PG_VERSION").exists():
        sys.exit(
            f"{target} holds a cluster that {run_as} cannot reach: make the folders above "
            f"it traversable (chmod o+x) or move it away to start a new one"
        )
    if target.is_dir():
        target.rmdir()  # an empty leftover; fails loudly if it is not empty
    outside = outside_dir()
    (outside / "pg").mkdir(parents=True, exist_ok=True)
    for path in (outside, outside / "pg"):
        shutil.chown(path, run_as, run_as)
    if (outside / "pg" / "PG_VERSION").exists():
        log(f"reusing the PostgreSQL cluster left in {outside / 'pg'}")
    log(f"{run_as} cannot reach {DATA}: the cluster lives in {outside / 'pg'}")
    target.symlink_to(outside / "pg")
    return target


def pg_log_file(pgdata: Path) -> Path:
    """Where pg_ctl writes the server log: `.data/run/pg.log`, or beside the cluster.

    pg_ctl opens the log as the server's user, so it must reach the file: when the
    cluster lives outside the checkout the log goes beside it (and `.data/run/pg.log`
    is a symlink to it, for people looking there).
    """
    local = RUN / "pg.log"
    if not pgdata.is_symlink():
        return local
    outside_log = pgdata.resolve().parent / "pg.log"
    if not local.is_symlink():
        local.unlink(missing_ok=True)
        local.symlink_to(outside_log)
    return outside_log


def pg_running_port(pgdata: Path) -> int | None:
    """The port of this checkout's cluster if its postmaster runs (from postmaster.pid).

    postmaster.pid lines: pid, data dir, start time, port, socket dir, listen address,
    shared memory key, status.
    """
    pid_file = pgdata / "postmaster.pid"
    if not live_pid(pid_file, "postgres"):
        return None
    try:
        return int(pid_file.read_text().splitlines()[3])
    except (OSError, ValueError, IndexError):
        return None


def pg_url(port: int) -> str:
    return f"postgres://postgres@127.0.0.1:{port}/{DB_NAME}"


def ensure_private_postgres(preferred_port: int | None) -> str:
    RUN.mkdir(parents=True, exist_ok=True)
    pgdata = DATA / "pg"
    port = pg_running_port(pgdata)  # the fast path of every later run
    if not port:
        install_service_packages()  # first: it creates the `postgres` user pg_data_dir needs
        pgdata = pg_data_dir()
        pg_log_file(pgdata)  # (re)makes the .data/run/pg.log symlink when outside
        # A cluster left in /var/tmp (after `.data` was deleted) may still be running.
        port = pg_running_port(pgdata)
    if port:
        # It may still be starting up (or recovering after a crash).
        if not wait_until(lambda: not port_free(port)):
            log_file = pg_log_file(pgdata)
            sys.exit(
                f"PostgreSQL runs but does not listen on {port}; {log_file}:\n{tail(log_file)}"
            )
        return pg_url(port)

    binary = pg_bin()
    run_as = pg_run_as()
    real = pgdata.resolve()
    real.mkdir(parents=True, exist_ok=True)
    logfile = pg_log_file(pgdata)
    logfile.touch()
    if run_as:
        uid = pwd.getpwnam(run_as).pw_uid
        os.chown(real, uid, -1)
        os.chown(logfile, uid, -1)  # pg_ctl appends to it as that user

    if not (real / "PG_VERSION").exists():
        log(f"initialising a private PostgreSQL cluster in {real}")
        subprocess.run(
            pg_cmd(
                *(str(binary / "initdb"), "-D", str(real), "-U", "postgres"),
                *("-A", "trust", "-E", "UTF8", "--locale=C.UTF-8"),
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            cwd="/",  # the server's user may not be able to enter the checkout
        )

    wait_for_reaping(real / "postmaster.pid", "postgres")
    port = pick_port(PG_BASE_PORT, preferred_port)
    log(f"starting private PostgreSQL on 127.0.0.1:{port} (log: {logfile})")
    # -k '': no Unix socket (see the module docstring); pg_ctl runs -o through sh.
    started = subprocess.run(
        pg_cmd(
            *(str(binary / "pg_ctl"), "-D", str(real), "-l", str(logfile)),
            *("-w", "-t", "30", "-o", f"-h 127.0.0.1 -p {port} -k ''", "start"),
        ),
        stdout=subprocess.DEVNULL,
        cwd="/",
    )
    if started.returncode != 0 or not wait_until(lambda: not port_free(port)):
        sys.exit(f"PostgreSQL did not start on 127.0.0.1:{port}; {logfile}:\n{tail(logfile)}")
    return pg_url(port)


def stop_private_postgres() -> None:
    pgdata = DATA / "pg"
    port = pg_running_port(pgdata)
    if not port:
        return
    log(f"stopping private PostgreSQL on 127.0.0.1:{port}")
    subprocess.run(
        pg_cmd(str(pg_bin() / "pg_ctl"), "-D", str(pgdata.resolve()), "-m", "fast", "stop"),
        check=True,
        stdout=subprocess.DEVNULL,
        cwd="/",
    )


def pg_usable(url: str) -> bool:
    """True if we can log in to the server of `url` (its `postgres` database)."""
    import psycopg  # from the venv

    try:
        with psycopg.connect(admin_url(url), connect_timeout=5):
            return True
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log(f"skipping PostgreSQL at {redact(url)}: {reason}")
        return False


def admin_url(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


def ensure_database(url: str) -> None:
    import psycopg  # from the venv
    from psycopg import sql

    name = urlsplit(url).path.lstrip("/") or DB_NAME
    with psycopg.connect(admin_url(url), autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            log(f"creating database {name}")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        # The first migration creates btree_gist; say so now rather than mid-migrate.
        if not conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'btree_gist'"
        ).fetchone():
            sys.exit(
                f"the PostgreSQL server at {redact(url)} lacks the btree_gist extension (contrib "
                "modules); on Debian they ship in postgresql-NN / postgresql-contrib"
            )


# --- private Redis --------------------------------------------------------------------


def redis_command(port: int, *args: str) -> bytes:
    """Send one command to the Redis on 127.0.0.1:port; its raw reply (b"" if none)."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(request.encode())
            return sock.recv(4096)
    except OSError:
        return b""


def redis_running_port() -> int | None:
    """The port of this checkout's Redis if it runs, from the config we started it with.

    It is ours if its pid file names a live redis-server, or, should the pid file have
    gone (`.data` deleted and recreated while it ran), if the server on that port says
    it was started with our pid file.
    """
    if not REDIS_CONF.exists():
        return None
    port = None
    for line in REDIS_CONF.read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "port":
            port = int(value)
    if port is None:
        return None
    if live_pid(REDIS_PID, "redis-server"):
        return port
    if str(REDIS_PID).encode() in redis_command(port, "CONFIG", "GET", "pidfile"):
        return port
    return None


def redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def quoted(path: Path) -> str:
    # Redis config strings accept double quotes with backslash escapes, as JSON writes.
    return json.dumps(str(path), ensure_ascii=False)


def ensure_private_redis(preferred_port: int | None) -> str:
    RUN.mkdir(parents=True, exist_ok=True)
    port = redis_running_port()
    if port:
        if not wait_until(lambda: redis_usable(redis_url(port), quiet=True)):
            sys.exit(f"Redis runs but does not answer on {port}:\n{tail(RUN / 'redis.log')}")
        return redis_url(port)

    install_service_packages()
    server = shutil.which("redis-server") or sys.exit("redis-server not found")
    port = pick_port(REDIS_BASE_PORT, preferred_port)
    # A config file rather than arguments: it also records which port this checkout's
    # server uses (read back by redis_running_port).
    REDIS_CONF.write_text(
        "\n".join(
            [
                "# Written by deploy/services.py: this checkout's private Redis.",
                f"port {port}",
                "bind 127.0.0.1",
                "daemonize yes",
                'save ""',  # no RDB snapshots: a development broker and cache
                "appendonly no",
                f"dir {quoted(RUN)}",
                f"pidfile {quoted(REDIS_PID)}",
                f"logfile {quoted(RUN / 'redis.log')}",
                "",
            ]
        )
    )
    log(f"starting private Redis on 127.0.0.1:{port}")
    subprocess.run([server, str(REDIS_CONF)], check=True)
    if not wait_until(lambda: redis_usable(redis_url(port), quiet=True)):
        sys.exit(f"Redis did not start on 127.0.0.1:{port}:\n{tail(RUN / 'redis.log')}")
    return redis_url(port)


def stop_private_redis() -> None:
    port = redis_running_port()
    if not port:
        return
    log(f"stopping private Redis on 127.0.0.1:{port}")
    redis_command(port, "SHUTDOWN")  # a clean shutdown, as `redis-cli shutdown` does
    if not wait_until(lambda: port_free(port), 10):
        sys.exit(f"Redis on {port} did not stop; see {RUN / 'redis.log'}")


def redis_usable(url: str, quiet: bool = False) -> bool:
    """True if a Redis at `url` answers PING (not just any listener on the port)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 6379), timeout=2
        ) as sock:
            if parts.password:
                user = parts.username or "default"
                sock.sendall(f"AUTH {unquote(user)} {unquote(parts.password)}\r\n".encode())
                sock.recv(256)
            sock.sendall(b"PING\r\n")
            reply = sock.recv(256)
    except OSError as exc:
        reply = str(exc).encode()
    if reply.startswith(b"+PONG"):
        return True
    if not quiet:
        reason = reply.decode(errors="replace").strip() or "no answer to PING (not Redis?)"
        log(f"skipping Redis at {redact(url)}: {reason}")
    return False


# --- choosing -------------------------------------------------------------------------


def choose(
    name: str,
    recorded: dict[str, str],
    standard: str,
    base_port: int,
    usable: Callable[[str], bool],
    ensure_private: Callable[[int | None], str],
) -> str:
    rec = recorded.get(name)
    rec_private = private_port(rec, base_port)
    if forced():
        if os.environ.get(name):
            log(f"{FORCE_VAR} is set: ignoring {name} from the environment")
        return ensure_private(rec_private)
    if os.environ.get(name):
        return os.environ[name]
    if rec_private:  # this checkout already uses a private server: stick to it
        return ensure_private(rec_private)
    if rec and usable(rec):
        return rec
    if usable(standard):
        return standard
    return ensure_private(None)


def main(argv: list[str]) -> None:
    if argv == ["--stop"]:
        stop_private_postgres()
        stop_private_redis()
        return
    if argv:
        sys.exit("usage: deploy/services.py [--stop]")
    recorded = read_env()
    db_url = choose(
        "DATABASE_URL",
        recorded,
        STANDARD_PG_URL,
        PG_BASE_PORT,
        pg_usable,
        ensure_private_postgres,
    )
    redis = choose(
        "REDIS_URL",
        recorded,
        STANDARD_REDIS_URL,
        REDIS_BASE_PORT,
        redis_usable,
        ensure_private_redis,
    )
    ensure_database(db_url)
    values = dict(recorded)
    values["DATABASE_URL"] = db_url
    values["REDIS_URL"] = redis
    values.setdefault("SECRET_KEY", secrets.token_urlsafe(48))
    values.setdefault("DEBUG", "true")
    if values != recorded:
        write_env(values)
    log(f"PostgreSQL: {redact(db_url)}")
    log(f"Redis:      {redact(redis)}")


if __name__ == "__main__":
    main(sys.argv[1:])
