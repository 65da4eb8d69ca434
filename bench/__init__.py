"""Benchmarks: `manage.py bench NAME --json` prints one JSON object per run.

A benchmark is not a test: it measures a code path at realistic volume and compares it
with baselines measured in the same run (a naive loop, the raw COPY limit), so the
numbers mean something on whatever machine runs them.
"""
