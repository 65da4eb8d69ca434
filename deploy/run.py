"""`make run`: web (gunicorn), Celery worker and Celery beat in the foreground.

One Ctrl-C stops all three; if any of them dies, the others are stopped too so
the operator never runs a half-working system without noticing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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
        "--workers",
        "3",
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


def main() -> int:
    RUN.mkdir(parents=True, exist_ok=True)
    children: dict[str, subprocess.Popen] = {}
    for name, cmd in PROCESSES.items():
        children[name] = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)

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
    print(
        f"\n  Rentledger is running: http://127.0.0.1:{PORT}/app/\n"
        f"  Demo logins (password for all: {os.environ.get('DEMO_PASSWORD', 'rentledger-demo')}):\n"
        + "".join(f"    {line}\n" for line in demo_logins())
        + "  Ctrl-C stops web, worker and beat.\n",
        flush=True,
    )
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
