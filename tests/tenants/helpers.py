"""Helpers shared by the foundation tests."""

from django.apps import apps

WATCHED_APPS = {"auth", "tenants", "invoices", "ledger", "payments", "dunning"}


def snapshot() -> dict[str, list[tuple]]:
    """Every column of every row a dashboard request could touch (updated_at included),
    so "changed nothing" is checked for all landlords at once."""
    return {
        model._meta.label: list(model._default_manager.order_by("pk").values_list())
        for model in apps.get_models(include_auto_created=True)
        if model._meta.app_label in WATCHED_APPS and model._meta.managed and not model._meta.proxy
    }
