#!/usr/bin/env bash
# Idempotent bootstrap shared by `make run`, `make test` and `make services`:
# Debian packages from deploy/apt/*.txt, .venv from uv.lock, then PostgreSQL
# and Redis (configured, already running, or private ones under .data/).
# Usage: deploy/bootstrap.sh [--with-test-tools]
set -euo pipefail
cd "$(dirname "$0")/.."

with_test_tools=0
[ "${1:-}" = "--with-test-tools" ] && with_test_tools=1

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@";
  elif command -v sudo >/dev/null 2>&1; then sudo "$@";
  else echo "need root to run: $*" >&2; return 1; fi
}

apt_updated=0
apt_install_missing() {
  # Reads package names (comments allowed) and installs only those missing.
  local missing=()
  local pkg
  for pkg in $(grep -hv '^\s*#' "$@" | tr -s ' \n' ' '); do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing system packages (${missing[*]}) and no apt-get: install them yourself" >&2
    return 1
  fi
  say "installing Debian packages: ${missing[*]}"
  if [ $apt_updated -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if command -v dpkg-query >/dev/null 2>&1; then
  apt_install_missing deploy/apt/base.txt
  [ $with_test_tools -eq 1 ] && apt_install_missing deploy/apt/test.txt
fi

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
uv_version=$(awk '/^name = "uv"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' uv.lock)
if [ ! -x .venv/bin/uv ] || [ "$(.venv/bin/uv --version | awk '{print $2}')" != "$uv_version" ]; then
  say "creating .venv with $("$PYTHON" --version) and uv $uv_version"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$uv_version"
fi
# --frozen: install exactly what uv.lock says; never re-resolve on a user's machine.
UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=.venv .venv/bin/uv sync --frozen --quiet --python .venv/bin/python

.venv/bin/python deploy/services.py
