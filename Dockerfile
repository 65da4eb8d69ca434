# One image for web, worker and beat; the same entrypoints as `make run`.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
COPY deploy/apt/base.txt deploy/apt/base.txt
RUN apt-get update -qq \
 && grep -v '^\s*#' deploy/apt/base.txt | xargs apt-get install -y -qq --no-install-recommends \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml uv.lock ./
RUN python -m venv .venv && .venv/bin/pip install -q "uv==$(awk '/^name = "uv"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' uv.lock)" \
 && .venv/bin/uv sync --frozen --no-dev --quiet
COPY . .
RUN DATABASE_URL=postgres://x@localhost/x .venv/bin/python manage.py collectstatic --no-input -v 0
ENV PATH=/app/.venv/bin:$PATH
EXPOSE 8000
CMD ["gunicorn", "billing_site.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--worker-class", "gthread", "--threads", "4", "--access-logfile", "-"]
