from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

import dunning.urls
import invoices.urls
import ledger.urls
import payments.staff_urls
import portal.staff_urls
import reports.urls
import tenants.urls
from dunning.webhooks import twilio_sms_status
from payments.webhooks import stripe_webhook

# One staff namespace under /app/, composed here so lower apps never import higher ones.
dashboard_patterns = (
    tenants.urls.urlpatterns
    + ledger.urls.urlpatterns
    + invoices.urls.urlpatterns
    + portal.staff_urls.urlpatterns
    + payments.staff_urls.urlpatterns
    + dunning.urls.urlpatterns
    + reports.urls.urlpatterns,
    "dashboard",
)

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="dashboard:home", permanent=False)),
    path("accounts/", include("tenants.auth_urls")),
    path("app/", include(dashboard_patterns)),
    # The tenant portal: its own login and pages, separate from the staff dashboard.
    path("portal/", include("portal.urls")),
    path("ops/admin/", admin.site.urls),
    # Stripe (and localstripe) deliver events here; no session, no CSRF, signed.
    path("stripe/webhook/", stripe_webhook, name="stripe-webhook"),
    # SMS delivery reports (Twilio status callbacks), signed.
    path(
        "hooks/sms/twilio/<int:notification_id>/",
        twilio_sms_status,
        name="twilio-sms-status",
    ),
]
if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
