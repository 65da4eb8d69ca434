"""`make run`: web (gunicorn), Celery worker and Celery beat in the foreground, plus
localstripe when no STRIPE_API_KEY is configured.

One Ctrl-C stops all three; if any of them dies, the others are stopped too so
the operator never runs a half-working system without noticing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
RUN = ROOT / ".data" / "run"
PORT = int(os.environ.get("PORT", "8000"))

PROCESSES = {
    "web": [
        str(VENV_BIN / "gunicorn"),
        "billing_site.wsgi",
        "--bind",
        f"0.0.0.0:{PORT}",
        # Threads keep client connections alive (Stripe reuses them) and overlap
        # database waits; two processes for two cores (`manage.py bench webhooks`).
        "--workers",
        "2",
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "--access-logfile",
        "-",
    ],
    "worker": [
        str(VENV_BIN / "celery"),
        "-A",
        "billing_site",
        "worker",
        "--pool=prefork",
        "--concurrency=2",
        "--queues=celery,notifications",
        "--loglevel=INFO",
    ],
    "beat": [
        str(VENV_BIN / "celery"),
        "-A",
        "billing_site",
        "beat",
        "--loglevel=INFO",
        "--schedule",
        str(RUN / "celerybeat-schedule"),
    ],
}


LOCALSTRIPE_PORT = 8420
# Must match the default of STRIPE_WEBHOOK_SECRET in billing_site/settings.py.
LOCAL_WEBHOOK_SECRET = "whsec_rentledger_local_dev"


def env_value(name: str) -> str:
    """A setting from the environment or the `.env` that deploy/services.py wrote."""
    if os.environ.get(name):
        return os.environ[name]
    env_file = ROOT / ".env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == name:
                return value.strip()
    return ""


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def localstripe_register_webhook() -> None:
    """localstripe forgets its webhook endpoints on restart: register ours every start."""
    data = urllib.parse.urlencode(
        {
            "url": f"http://127.0.0.1:{PORT}/stripe/webhook/",
            "secret": env_value("STRIPE_WEBHOOK_SECRET") or LOCAL_WEBHOOK_SECRET,
        }
    ).encode()
    url = f"http://127.0.0.1:{LOCALSTRIPE_PORT}/_config/webhooks/rentledger"
    urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=5).close()


def main() -> int:
    RUN.mkdir(parents=True, exist_ok=True)
    processes = dict(PROCESSES)
    use_localstripe = not env_value("STRIPE_API_KEY")
    if use_localstripe and not port_answers(LOCALSTRIPE_PORT):
        # An offline, stateful fake Stripe so the demo's pay button really works.
        processes["localstripe"] = [
            str(VENV_BIN / "localstripe"),
            "--port",
            str(LOCALSTRIPE_PORT),
            "--from-scratch",
        ]
    children: dict[str, subprocess.Popen] = {}
    for name, cmd in processes.items():
        children[name] = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    if use_localstripe:
        deadline = time.monotonic() + 15
        while not port_answers(LOCALSTRIPE_PORT) and time.monotonic() < deadline:
            time.sleep(0.1)
        localstripe_register_webhook()

    def stop(*_args) -> None:
        for proc in children.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def interrupt(*_args) -> None:
        raise KeyboardInterrupt

    # Installed explicitly: a process started in the background may inherit SIGINT as ignored.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    time.sleep(1.5)
    stripe_line = (
        f"  Stripe: localstripe on http://127.0.0.1:{LOCALSTRIPE_PORT} (offline test mode)"
        if use_localstripe
        else "  Stripe: STRIPE_API_KEY from the environment"
    )
    password = os.environ.get("DEMO_PASSWORD", "rentledger-demo")
    banner = [
        "",
        f"  Rentledger is running: http://127.0.0.1:{PORT}/app/",
        stripe_line,
        f"  Demo logins (password for all: {password}):",
        *(f"    {line}" for line in demo_logins()),
        "  Ctrl-C stops everything.",
    ]
    print("\n".join(banner), flush=True)
    try:
        while True:
            for name, proc in children.items():
                if proc.poll() is not None:
                    print(
                        f"{name} exited with {proc.returncode}; stopping the rest", file=sys.stderr
                    )
                    stop()
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        stop()
    return 0


def demo_logins() -> list[str]:
    path = RUN / "demo-logins.txt"
    return path.read_text().splitlines() if path.exists() else ["(run `manage.py seed_demo`)"]


if __name__ == "__main__":
    sys.exit(main())
