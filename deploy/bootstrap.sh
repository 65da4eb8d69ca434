#!/usr/bin/env bash
# Idempotent bootstrap shared by `make run`, `make test` and `make services`:
# Debian packages from deploy/apt/*.txt, .venv from uv.lock, then PostgreSQL
# and Redis (configured, already running, or private ones under .data/; see the
# docstring of deploy/services.py, e.g. RENTLEDGER_PRIVATE_SERVICES=1).
# Works as root or as a user with sudo (needed only when packages are missing).
# Usage: deploy/bootstrap.sh [--with-test-tools]
set -euo pipefail
cd "$(dirname "$0")/.."

with_test_tools=0
case "${1:-}" in
  "") ;;
  --with-test-tools) with_test_tools=1 ;;
  *) echo "usage: deploy/bootstrap.sh [--with-test-tools]" >&2; exit 2 ;;
esac

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@";
  elif command -v sudo >/dev/null 2>&1; then sudo "$@";
  else echo "need root (or sudo) to run: $*" >&2; return 1; fi
}

apt_install_missing() {
  # Reads package names (# comments allowed) and installs only those missing, so a
  # machine that has everything never touches apt (no `apt-get update`, no root).
  local missing=()
  local pkg
  for pkg in $(sed 's/#.*//' "$@"); do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing system packages (${missing[*]}) and no apt-get: install them yourself" >&2
    return 1
  fi
  say "installing Debian packages: ${missing[*]}"
  if [ -z "${RENTLEDGER_APT_UPDATED:-}" ]; then
    as_root apt-get update -qq
    # services.py (run below) skips its own update when this is set.
    export RENTLEDGER_APT_UPDATED=1
  fi
  # `env` inside the root command: sudo would drop a variable set outside it.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if command -v dpkg-query >/dev/null 2>&1; then
  apt_install_missing deploy/apt/base.txt
  if [ $with_test_tools -eq 1 ]; then apt_install_missing deploy/apt/test.txt; fi
fi

# Resolved after the packages: on a bare Debian, python3 arrives with python3-venv.
# The distribution's interpreter first: Debian's package is an optimised build, and a
# source build (pyenv's default, say) is configured without --enable-optimizations.
# Measured on one box (docs/decisions/0010): Django's query building takes ~1.45x the
# CPU on pyenv's 3.11 than on Debian's. A python3.11 earlier on PATH comes second.
if [ -z "${PYTHON:-}" ]; then
  for candidate in /usr/bin/python3.11 "$(command -v python3.11 || true)" "$(command -v python3 || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] \
      && "$candidate" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      PYTHON=$candidate
      break
    fi
  done
fi
if [ -z "${PYTHON:-}" ]; then
  echo "no Python 3.11 found: install it (Debian: apt-get install python3-venv)" >&2
  exit 1
fi

# A .venv made from another interpreter than the one chosen is made again (uv then
# reinstalls from the lock file): otherwise a checkout keeps whatever made it first.
venv_python=$(sed -n 's/^executable = //p' .venv/pyvenv.cfg 2>/dev/null || true)
if [ -n "$venv_python" ] && [ "$(realpath "$venv_python" 2>/dev/null)" != "$(realpath "$PYTHON")" ]; then
  say "the .venv was made with $venv_python; making it again with $PYTHON"
  rm -rf .venv
fi

uv_version=$(awk '/^name = "uv"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' uv.lock)
if [ ! -x .venv/bin/uv ] || [ "$(.venv/bin/uv --version | awk '{print $2}')" != "$uv_version" ]; then
  # uv is installed with the venv's pip. A .venv without a working pip is recreated:
  # Debian's `python3 -m venv` without python3-venv fails half-way, leaving a .venv
  # with a python but no pip, and the interpreter behind a .venv can disappear
  # (a pyenv version removed).
  if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    say "creating .venv with $("$PYTHON" --version)"
    rm -rf .venv
    if ! "$PYTHON" -m venv .venv; then
      rm -rf .venv  # never leave a half-made venv for the next run to trip over
      echo "'$PYTHON -m venv' failed; on Debian install python3-venv (or set PYTHON=...)" >&2
      exit 1
    fi
  fi
  say "installing uv $uv_version into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$uv_version"
fi
# --frozen: install exactly what uv.lock says; never re-resolve on a user's machine.
UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=.venv .venv/bin/uv sync --frozen --quiet --python .venv/bin/python

.venv/bin/python deploy/services.py
