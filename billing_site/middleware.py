"""Request checks that hold for every page before any view runs."""

from __future__ import annotations

from tenants.query import bad_query


class NulQueryParameterMiddleware:
    """A query parameter holding a NUL character gets a 400 naming it.

    No person types one (it comes from crafted links), and PostgreSQL text cannot hold
    it: a search box passing it to a query failed with a server error instead. Form
    fields refuse it on their own (Django's CharField validator, a field error)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        bad = {
            name.replace("\x00", "\\0") or "(unnamed)": "Contains a NUL character."
            for name, values in request.GET.lists()
            if "\x00" in name or any("\x00" in value for value in values)
        }
        if bad:
            return bad_query(bad)
        return self.get_response(request)
