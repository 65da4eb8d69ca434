from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo data `make run` seeds. Sits above every other app, so it may use them all."""

    name = "demo"
