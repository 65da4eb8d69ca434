"""`manage.py bench NAME [options] [--json]`: run one benchmark and print one result.

Each benchmark is a module with `add_arguments(parser)` and `run(**options) -> dict`,
registered in BENCHES (e.g. `billing_run`; later `webhooks`).
"""

import importlib
import json

from django.core.management.base import BaseCommand

BENCHES = {
    "billing_run": "bench.billing_run",
    "webhooks": "bench.webhooks",
}


class Command(BaseCommand):
    help = "Run a benchmark; with --json print one JSON object on stdout (progress on stderr)."

    def add_arguments(self, parser):
        subparsers = parser.add_subparsers(dest="name", required=True, metavar="NAME")
        for name, module_path in BENCHES.items():
            module = importlib.import_module(module_path)
            sub = subparsers.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
            sub.add_argument("--json", action="store_true", help="print one JSON object")
            module.add_arguments(sub)

    def handle(self, *args, name, **options):
        as_json = options.pop("json", False)
        result = importlib.import_module(BENCHES[name]).run(**options)
        if as_json:
            self.stdout.write(json.dumps(result))
        else:
            for key, value in result.items():
                self.stdout.write(f"{key}: {value}")
