"""The WSGI application (gunicorn: `billing_site.wsgi`).

Stripe's webhook deliveries skip the middleware stack. The endpoint reads only the
body and the `Stripe-Signature` header and answers with a status: it has no use for a
session, a user, a landlord, a locale, CSRF (it is exempt) or response headers for
browsers, and those ten middlewares cost ~0.27 ms of CPU per delivery, a third of
the request's Python time, at the rate Stripe can deliver (decision 0012). Every
other path goes through the full stack. The webhook still gets Django's request
handling: URL resolution, the request signals (database connections are closed or
reused as for any request), the host check of `ALLOWED_HOSTS`, and exceptions turned
into responses.
"""

import os

from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_site.settings")


class BareHandler(WSGIHandler):
    """Django's WSGI handler with no middleware."""

    def load_middleware(self, is_async=False):
        # What BaseHandler.load_middleware builds for an empty MIDDLEWARE setting.
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = convert_exception_to_response(self._checked_response)

    def _checked_response(self, request):
        request.get_host()  # DisallowedHost -> 400, as CommonMiddleware would
        response = self._get_response(request)
        # As CommonMiddleware does: without it gunicorn sends the body chunked.
        if not response.streaming and not response.has_header("Content-Length"):
            response.headers["Content-Length"] = str(len(response.content))
        return response


class Application:
    """Dispatch on the path: the bare handler for `bare_paths`, the full one otherwise."""

    def __init__(self, *, full, bare, bare_paths):
        self.full, self.bare, self.bare_paths = full, bare, frozenset(bare_paths)

    def __call__(self, environ, start_response):
        handler = self.bare if environ.get("PATH_INFO") in self.bare_paths else self.full
        return handler(environ, start_response)


def _application() -> Application:
    full = get_wsgi_application()  # sets Django up
    from django.urls import reverse

    return Application(full=full, bare=BareHandler(), bare_paths=[reverse("stripe-webhook")])


application = _application()
