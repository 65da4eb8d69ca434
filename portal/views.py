"""The tenant portal (/portal/): a tenant's balance, leases, invoices, payments and
profile, and the pay button.

Edges only: parse input, make one call into a portal selector or service, render.
Scoping: `PortalView` resolves the current Tenant from the logged-in user's Tenant
rows (and the one chosen in the session when the user rents from several
landlords); every read goes through portal.selectors with that tenant, so another
tenant's id is a 404.
"""

from __future__ import annotations

from contextlib import suppress
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone, translation
from django.utils.http import content_disposition_header, url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views import View

from money.currency import is_known_currency
from payments import stripe_client
from payments.models import BANK_DEBIT_METHODS, Method, PaymentStatus
from portal import selectors, services
from portal.formats import failure_text, portal_language
from portal.forms import (
    InvitationAcceptForm,
    PayForm,
    PortalAuthenticationForm,
    ProfileForm,
)
from portal.selectors import TENANT_SESSION_KEY
from tenants.forms import apply_service_errors
from tenants.query import whole_number

LOGIN_BACKEND = "django.contrib.auth.backends.ModelBackend"
# Rows per page of the tenant's lists (past invoices, payments, notices).
PORTAL_PAGE_SIZE = 20


def _safe_next(request, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target.startswith("/portal/") and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def _wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


class PortalView(View):
    """Base of every signed-in portal page: a login that rents from the landlord,
    resolved to one Tenant, the page rendered in the tenant's language."""

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            query = urlencode({"next": request.get_full_path()})
            return redirect(f"{reverse('portal:login')}?{query}")
        tenant, tenancies = selectors.tenancy_for_request(
            user=request.user, chosen_id=request.session.get(TENANT_SESSION_KEY)
        )
        if not tenancies:
            return render(request, "portal/no_access.html", status=403)
        if tenant is None:
            query = urlencode({"next": request.get_full_path()})
            return redirect(f"{reverse('portal:choose')}?{query}")
        self.tenant = tenant
        self.tenancies = tenancies
        self.landlord = tenant.landlord
        with translation.override(portal_language(tenant.language)):
            return super().dispatch(request, *args, **kwargs)

    def today(self):
        return timezone.now().astimezone(self.landlord.tz).date()

    def render(self, template: str, status: int = 200, **context):
        context.update(
            tenant=self.tenant,
            tenancies=self.tenancies,
            landlord=self.landlord,
            today=self.today(),
        )
        return render(self.request, template, context, status=status)


# --- signing in -----------------------------------------------------------------------


class PortalLoginView(auth_views.LoginView):
    template_name = "portal/login.html"
    authentication_form = PortalAuthenticationForm
    redirect_authenticated_user = False

    def get_default_redirect_url(self):
        return reverse("portal:home")

    def get_redirect_url(self):
        target = super().get_redirect_url()
        return target if target.startswith("/portal/") else ""

    def form_valid(self, form):
        # A fresh choice of landlord for each sign-in.
        response = super().form_valid(form)
        self.request.session.pop(TENANT_SESSION_KEY, None)
        return response


class PortalLogoutView(auth_views.LogoutView):
    next_page = reverse_lazy("portal:login")


class ChooseTenancyView(View):
    """A login that rents from several landlords picks which one the portal shows."""

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect("portal:login")
        self.tenancies = list(selectors.tenancy_list(user=request.user))
        if not self.tenancies:
            return render(request, "portal/no_access.html", status=403)
        return super().dispatch(request, *args, **kwargs)

    def get(self, request):
        return render(
            request,
            "portal/choose.html",
            {"tenancies": self.tenancies, "next": _safe_next(request, "")},
        )

    def post(self, request):
        try:
            wanted = int(request.POST.get("tenant", ""))
        except ValueError:
            wanted = None
        if wanted not in {t.pk for t in self.tenancies}:
            return HttpResponseBadRequest("Choose one of your tenancies.")
        request.session[TENANT_SESSION_KEY] = wanted
        return redirect(_safe_next(request, reverse("portal:home")))


class InvitationAcceptView(View):
    def _find(self, token):
        try:
            return services.tenant_invitation_find(token=token), None
        except ValidationError as exc:
            return None, exc

    def _existing(self, request, invitation) -> bool:
        """The invited email already has a login (this person rents elsewhere, or
        is staff), which they confirm with its password instead of choosing one."""
        if request.user.is_authenticated and request.user.username.lower() == invitation.email:
            return False
        return services.portal_user_exists(email=invitation.email)

    def _show(self, request, invitation, form, existing, status=200):
        signed_in_as_invitee = (
            request.user.is_authenticated and request.user.username.lower() == invitation.email
        )
        with translation.override(portal_language(invitation.tenant.language)):
            return render(
                request,
                "portal/invitation.html",
                {
                    "invitation": invitation,
                    "form": form,
                    "existing": existing,
                    "signed_in_as_invitee": signed_in_as_invitee,
                },
                status=status,
            )

    def _unavailable(self, request, error):
        return render(
            request, "portal/invitation_unavailable.html", {"error": error.messages[0]}, status=410
        )

    def get(self, request, token: str):
        invitation, error = self._find(token)
        if invitation is None:
            return self._unavailable(request, error)
        existing = self._existing(request, invitation)
        return self._show(request, invitation, InvitationAcceptForm(existing=existing), existing)

    def post(self, request, token: str):
        invitation, error = self._find(token)
        if invitation is None:
            return self._unavailable(request, error)
        existing = self._existing(request, invitation)
        signed_in = request.user.is_authenticated and (
            request.user.username.lower() == invitation.email
        )
        form = InvitationAcceptForm(request.POST, existing=existing)
        valid = form.is_valid()  # also when signed in: errors attach to a cleaned form
        if signed_in or valid:
            try:
                tenant = services.tenant_invitation_accept(
                    token=token,
                    password=form.cleaned_data.get("password", "") if not signed_in else "",
                    user=request.user if signed_in else None,
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                login(request, tenant.user, backend=LOGIN_BACKEND)
                request.session[TENANT_SESSION_KEY] = tenant.pk
                with translation.override(portal_language(tenant.language)):
                    messages.success(
                        request,
                        _("Welcome, %(name)s. This is your tenant portal for %(landlord)s.")
                        % {"name": tenant.full_name, "landlord": tenant.landlord.name},
                    )
                return redirect("portal:home")
        return self._show(request, invitation, form, existing)


class PasswordResetView(auth_views.PasswordResetView):
    template_name = "portal/password_reset_form.html"
    email_template_name = "portal/email/password_reset.txt"
    subject_template_name = "portal/email/password_reset_subject.txt"
    success_url = reverse_lazy("portal:password_reset_done")


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "portal/password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "portal/password_reset_confirm.html"
    success_url = reverse_lazy("portal:password_reset_complete")


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "portal/password_reset_complete.html"


# --- pages ----------------------------------------------------------------------------


class HomeView(PortalView):
    def get(self, request):
        return self.render(
            "portal/home.html", home=selectors.home(tenant=self.tenant, today=self.today())
        )


class LeaseListView(PortalView):
    def get(self, request):
        return self.render("portal/leases.html", leases=selectors.lease_list(tenant=self.tenant))


class InvoiceListView(PortalView):
    def get(self, request):
        rows = selectors.invoice_rows(tenant=self.tenant, today=self.today())
        # Every invoice to pay is listed; past ones, years of them, a page at a time.
        page = Paginator([r for r in rows if not r.is_open], PORTAL_PAGE_SIZE).get_page(
            request.GET.get("page")
        )
        return self.render(
            "portal/invoices.html",
            open_rows=[r for r in rows if r.is_open],
            past_rows=page.object_list,
            page=page,
        )


class InvoiceDetailView(PortalView):
    def get(self, request, pk: int):
        invoice = selectors.invoice_get(tenant=self.tenant, pk=pk)
        return self.render(
            "portal/invoice_detail.html",
            row=selectors.invoice_row(tenant=self.tenant, invoice=invoice, today=self.today()),
            object=invoice,
            allocations=selectors.invoice_allocations(tenant=self.tenant, invoice=invoice),
        )


class InvoicePdfView(PortalView):
    def get(self, request, pk: int):
        # Imported here: the PDF module pulls in WeasyPrint, which only this view needs.
        from invoices.pdf import invoice_pdf, invoice_pdf_filename

        invoice = selectors.invoice_get(tenant=self.tenant, pk=pk)
        response = HttpResponse(invoice_pdf(invoice=invoice), content_type="application/pdf")
        response["Content-Disposition"] = content_disposition_header(
            True, invoice_pdf_filename(invoice=invoice)
        )
        return response


class PaymentListView(PortalView):
    def get(self, request):
        return self.render(
            "portal/payments.html",
            page=Paginator(selectors.payment_list(tenant=self.tenant), PORTAL_PAGE_SIZE).get_page(
                request.GET.get("page")
            ),
            methods=selectors.saved_methods(tenant=self.tenant),
        )


class NoticeListView(PortalView):
    """Reminders and notices the landlord's dunning sent this tenant, newest first."""

    def get(self, request):
        page = Paginator(selectors.notice_list(tenant=self.tenant), PORTAL_PAGE_SIZE).get_page(
            request.GET.get("page")
        )
        return self.render("portal/notices.html", page=page)


class PaymentDetailView(PortalView):
    def get(self, request, pk: int):
        payment = selectors.payment_get(tenant=self.tenant, pk=pk)
        return self.render(
            "portal/payment_detail.html",
            payment=payment,
            outcome=services.payment_outcome_status(payment),
            bank_debit=payment.method in BANK_DEBIT_METHODS,
        )


class PaymentStatusView(PortalView):
    """JSON for the pay page's polling: the payment's state, synced from Stripe
    when the webhook is late."""

    def get(self, request, pk: int):
        payment = selectors.payment_get(tenant=self.tenant, pk=pk)
        payment = services.portal_payment_refresh(payment=payment, now=timezone.now())
        return JsonResponse(_status_json(payment))


def _status_json(payment) -> dict:
    return {
        "id": payment.pk,
        "status": services.payment_outcome_status(payment),
        "method": payment.method,
        "payment_status": payment.status,
        "label": str(PaymentStatus(payment.status).label),
        "message": failure_text(payment),
        "payment_url": reverse("portal:payment_detail", args=[payment.pk]),
    }


# --- paying ---------------------------------------------------------------------------


class PayView(PortalView):
    """GET: the pay form for one invoice (?invoice=<id>) or the balance of a currency
    (?currency=EUR): card, or the currency's bank debit (SEPA for EUR, ACH for USD).
    POST: pay with what Stripe.js set up; answers JSON for the page's script (or
    redirects, for a plain form post)."""

    def _target(self, params):
        """(invoice or None, currency, amount due) of the request."""
        invoice_id = params.get("invoice") or ""
        if invoice_id:
            pk = whole_number(invoice_id)
            if pk is None:
                raise ValidationError(_("Unknown invoice."))
            invoice = selectors.payable_invoice_get(tenant=self.tenant, pk=pk)
            currency = invoice.currency
        else:
            invoice = None
            owed = {c: b for c, b in selectors.balances(tenant=self.tenant).items() if b > 0}
            currency = (params.get("currency") or "").upper()
            if not currency and len(owed) == 1:
                currency = next(iter(owed))
            if not currency:
                currency = self.landlord.default_currency
            if not is_known_currency(currency):
                # Read straight from the request into the balance query: a forged code
                # (one with a NUL in it) must stop here, not in PostgreSQL.
                raise ValidationError(_("Unknown currency."))
        due = services.amount_due(tenant=self.tenant, currency=currency, invoice=invoice)
        return invoice, currency, due

    def _setup_secrets(self, options) -> tuple[dict[str, str], str]:
        """Client secrets of the SetupIntents Stripe.js confirms (card; SEPA mandate),
        and what to say if the card one cannot be made. ACH needs none here."""
        secrets, error = {}, ""
        try:
            secrets[Method.CARD] = services.method_setup_start(tenant=self.tenant)
        except (stripe_client.StripeError, ValidationError) as exc:
            error = _("Card payments are not available right now. Please try again later.")
            if isinstance(exc, ValidationError):
                error = exc.messages[0]
            return secrets, error
        if Method.SEPA_DEBIT in options.methods:
            # Without it the tenant can still pay by card; the bank option says why not.
            with suppress(stripe_client.StripeError, ValidationError):
                secrets[Method.SEPA_DEBIT] = services.method_setup_start(
                    tenant=self.tenant, method=Method.SEPA_DEBIT
                )
        return secrets, error

    def _form_context(self, invoice, currency, due, form=None, setup_error=""):
        options = selectors.pay_options(tenant=self.tenant, currency=currency)
        secrets = {}
        if due > 0 and not setup_error:
            secrets, setup_error = self._setup_secrets(options)
        return {
            "invoice": invoice,
            "row": selectors.invoice_row(tenant=self.tenant, invoice=invoice, today=self.today())
            if invoice
            else None,
            "currency": currency,
            "due": due,
            "options": options,
            "allow_partial": options.allow_partial,
            "method": (form.data.get("method") if form is not None else "") or Method.CARD,
            "key": services.payment_key_new(tenant=self.tenant),
            "setup_client_secret": secrets.get(Method.CARD, ""),
            "sepa_setup_client_secret": secrets.get(Method.SEPA_DEBIT, ""),
            "setup_error": setup_error,
            "form": form,
            "processing": list(selectors.processing_payments(tenant=self.tenant, invoice=invoice))
            if invoice
            else list(selectors.processing_payments(tenant=self.tenant)),
            "stripe_js_url": settings.STRIPE_JS_URL,
            "stripe_publishable_key": settings.STRIPE_PUBLISHABLE_KEY,
            "has_autopay": selectors.saved_methods(tenant=self.tenant)
            .filter(autopay=True)
            .exists(),
        }

    def get(self, request):
        try:
            invoice, currency, due = self._target(request.GET)
        except ValidationError:
            return redirect("portal:invoices")
        return self.render("portal/pay.html", **self._form_context(invoice, currency, due))

    def post(self, request):
        try:
            invoice, currency, due = self._target(request.POST)
        except ValidationError as exc:
            return self._invalid(request, {"__all__": exc.messages})
        form = PayForm(request.POST, currency=currency, due_minor=due)
        if not form.is_valid():
            return self._invalid(request, form.errors, invoice, currency, due, form)
        data = form.cleaned_data
        try:
            outcome = services.portal_payment_start(
                tenant=self.tenant,
                idempotency_key=data["key"],
                amount_minor=data["amount"],
                currency=currency,
                invoice=invoice,
                method=data["method"],
                payment_method_id=data["payment_method_id"],
                save_method=data["save_card"],
                actor=request.user,
            )
        except ValidationError as exc:
            errors = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
            return self._invalid(request, errors, invoice, currency, due, form)
        except stripe_client.StripeError:
            errors = {"__all__": [_("The payment service did not answer. Nothing was charged.")]}
            return self._invalid(request, errors, invoice, currency, due, form, status=503)
        if not _wants_json(request):
            return redirect("portal:payment_detail", outcome.payment.pk)
        body = _status_json(outcome.payment) | {
            "status": outcome.status,
            # The tenant's language, not Stripe's English (portal.formats.failure_text).
            "message": failure_text(outcome.payment) or outcome.message,
            "client_secret": outcome.client_secret if outcome.status == "requires_action" else "",
            "status_url": reverse("portal:payment_status", args=[outcome.payment.pk]),
        }
        if outcome.status == "failed":
            # Another card or account gets a fresh attempt: new key, new SetupIntents.
            context = self._form_context(invoice, currency, due)
            body |= {
                "key": context["key"],
                "setup_client_secret": context["setup_client_secret"],
                "sepa_setup_client_secret": context["sepa_setup_client_secret"],
            }
        return JsonResponse(body)

    def _invalid(self, request, errors, invoice=None, currency="", due=0, form=None, status=400):
        errors = {field: [str(m) for m in messages] for field, messages in errors.items()}
        if _wants_json(request):
            return JsonResponse({"status": "invalid", "errors": errors}, status=status)
        if invoice is None and not currency:
            return redirect("portal:invoices")
        for field, field_messages in errors.items():
            if form is not None and field in form.fields and field != "__all__":
                for message in field_messages:
                    if message not in form.errors.get(field, []):
                        form.add_error(field, message)
            else:
                for message in field_messages:
                    messages.error(request, message)
        context = self._form_context(invoice, currency, due, form=form)
        return self.render("portal/pay.html", status=status, **context)


# --- saved payment methods and autopay -------------------------------------------------


class MethodListView(PortalView):
    """The tenant's saved cards and bank accounts, autopay, and forms to add a card or
    the bank account of the landlord's currency (SEPA mandate, or ACH)."""

    def get(self, request):
        options = selectors.pay_options(tenant=self.tenant, currency=self.landlord.default_currency)
        setup_secret, setup_error = "", ""
        try:
            setup_secret = services.method_setup_start(tenant=self.tenant)
        except (stripe_client.StripeError, ValidationError):
            setup_error = _("Cards cannot be added right now. Please try again later.")
        bank_secret, bank_error = "", ""
        if options.bank_method:
            try:
                bank_secret = services.method_setup_start(
                    tenant=self.tenant, method=options.bank_method
                )
            except (stripe_client.StripeError, ValidationError):
                bank_error = _("Bank accounts cannot be added right now. Please try again later.")
        return self.render(
            "portal/methods.html",
            methods=selectors.saved_methods(tenant=self.tenant),
            bank_method=options.bank_method,
            setup_client_secret=setup_secret,
            setup_error=setup_error,
            bank_setup_client_secret=bank_secret,
            bank_setup_error=bank_error,
            stripe_js_url=settings.STRIPE_JS_URL,
            stripe_publishable_key=settings.STRIPE_PUBLISHABLE_KEY,
        )


class MethodAddView(PortalView):
    def post(self, request):
        try:
            saved = services.method_save(
                tenant=self.tenant,
                payment_method_id=request.POST.get("payment_method_id", ""),
                autopay=request.POST.get("autopay") == "on",
                actor=request.user,
            )
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        except stripe_client.StripeError as exc:
            messages.error(
                request,
                getattr(exc, "user_message", None) or _("The payment method was not saved."),
            )
        else:
            messages.success(request, _("Saved: %(method)s.") % {"method": saved})
        return redirect("portal:methods")


class MethodAutopayView(PortalView):
    def post(self, request, pk: int):
        saved = selectors.saved_method_get(tenant=self.tenant, pk=pk)
        turn_on = request.POST.get("autopay") == "on"
        services.autopay_toggle(
            tenant=self.tenant, saved_method=saved if turn_on else None, actor=request.user
        )
        if turn_on:
            messages.success(
                request,
                _("Autopay is on: new invoices are charged to %(method)s.") % {"method": saved},
            )
        else:
            messages.success(request, _("Autopay is off."))
        return redirect("portal:methods")


class MethodRemoveView(PortalView):
    """Remove a saved card or bank account: a confirmation page, then the removal (it
    is detached at Stripe for good, and autopay with it stops)."""

    def get(self, request, pk: int):
        saved = selectors.saved_method_get(tenant=self.tenant, pk=pk)
        return self.render("portal/method_remove.html", method=saved)

    def post(self, request, pk: int):
        saved = selectors.saved_method_get(tenant=self.tenant, pk=pk)
        try:
            services.method_remove(tenant=self.tenant, saved_method=saved, actor=request.user)
        except stripe_client.StripeError:
            messages.error(request, _("The payment method could not be removed right now."))
        else:
            messages.success(request, _("Removed: %(method)s.") % {"method": saved})
        return redirect("portal:methods")


# --- profile --------------------------------------------------------------------------


class ProfileView(PortalView):
    def get(self, request, form=None):
        form = form or ProfileForm(
            initial={
                "email": self.tenant.email,
                "phone": self.tenant.phone,
                # A language the portal lacks (set by staff) shows as the one the
                # tenant actually reads here.
                "language": portal_language(self.tenant.language),
            }
        )
        return self.render("portal/profile.html", form=form)

    def post(self, request):
        form = ProfileForm(request.POST)
        if form.is_valid():
            fields = dict(form.cleaned_data)
            if fields["language"] == portal_language(self.tenant.language):
                # Left as shown: keep what staff set, even a language the portal lacks
                # (the tenant's emails may still be written in it).
                del fields["language"]
            try:
                tenant = services.tenant_profile_update(
                    tenant=self.tenant, actor=request.user, **fields
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                with translation.override(portal_language(tenant.language)):
                    messages.success(request, _("Your details were saved."))
                return redirect("portal:profile")
        return self.get(request, form=form)
