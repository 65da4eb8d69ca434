"""Write actions of the tenant portal: invitations, the tenant's profile, and starting
a card payment from the portal (on top of payments.services).

Rules:

- An invitation is a random token mailed to the tenant; only its SHA-256 is stored.
  It expires after 7 days, works once, and a newer invitation for the same tenant
  retires the older ones. Accepting links a login (new, or the existing one with that
  email: a person can rent from several landlords) to the Tenant row.
- A portal payment is keyed by an idempotency key generated with the pay form
  (`portal:<tenant>:<random>`): a double submit (two clicks, a retried request, a
  reload) finds the first payment instead of charging twice. Two requests with the
  same key at the same moment are serialised by a PostgreSQL advisory lock on the key,
  held outside any transaction (no row locks are held during Stripe calls).
- The tenant may pay one invoice or the whole balance of a currency, part of it if
  the landlord allows partial payments (payments.PaymentSettings, read here and
  enforced by payments.services.payment_intent_create), or more: the rest is kept
  as credit, up to one month's rent beyond what they owe (a larger amount is refused
  on `amount` before anything is written or sent to Stripe).
- Card, and the bank debit of the currency's scheme: SEPA Direct Debit for EUR, ACH
  (`us_bank_account`) for USD. Card and SEPA are set up in the browser with a
  SetupIntent (`confirmCardSetup` / `confirmSepaDebitSetup`) and confirmed here; ACH
  is collected and confirmed by Stripe.js on the PaymentIntent we create
  (`collectBankAccountForPayment` + `confirmUsBankAccountPayment`). A bank debit is
  `processing` for days and posted only when Stripe reports success.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import override

from invoices.models import Invoice, InvoiceState
from invoices.selectors import invoice_balances
from ledger.selectors import tenant_balance
from payments import services as payments
from payments import stripe_client
from payments.forms import MAX_MINOR
from payments.models import (
    POSTED_STATUSES,
    STRIPE_METHODS,
    Method,
    Payment,
    PaymentStatus,
    SavedPaymentMethod,
)
from portal.formats import PORTAL_LANGUAGES
from portal.models import TenantInvitation
from tenants.models import Tenant, validate_phone
from tenants.services import audit

log = logging.getLogger(__name__)

INVITATION_LIFETIME = timedelta(days=7)
KEY_PREFIX = "portal"
# While a payment waits (3-D Secure, a late webhook), the status page asks Stripe
# itself once the payment has been quiet this long.
SYNC_AFTER = timedelta(seconds=4)
PROFILE_FIELDS = ("email", "phone", "language")


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- invitations ----------------------------------------------------------------------


@transaction.atomic
def tenant_invitation_create(
    *, tenant: Tenant, email: str, invited_by, now: datetime | None = None
) -> tuple[TenantInvitation, str]:
    """Invite a tenant to the portal. Returns the invitation and the raw token (only
    its hash is stored). Open invitations of the same tenant are retired, so only
    the newest link works."""
    now = now or timezone.now()
    email = get_user_model().objects.normalize_email((email or "").strip()).lower()
    if not email:
        raise ValidationError({"email": _("Enter the tenant's email address.")})
    list(Tenant.objects.select_for_update().filter(pk=tenant.pk).values_list("pk"))
    TenantInvitation.objects.filter(
        tenant=tenant, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=now, updated_at=now)
    token = secrets.token_urlsafe(32)
    invitation = TenantInvitation(
        landlord_id=tenant.landlord_id,
        tenant=tenant,
        email=email,
        token_hash=_hash_token(token),
        invited_by=invited_by if getattr(invited_by, "is_authenticated", False) else None,
        expires_at=now + INVITATION_LIFETIME,
    )
    invitation.full_clean(exclude=["token_hash", "landlord", "tenant"])
    invitation.save()
    audit(
        landlord=tenant.landlord,
        actor=invited_by,
        action="portal.invite",
        obj=tenant,
        summary=f"Invited {tenant.full_name} to the tenant portal ({email})",
    )
    return invitation, token


def tenant_invitation_send(*, invitation: TenantInvitation, link: str) -> None:
    """Email the invitation link in the tenant's language, after commit."""
    tenant, landlord = invitation.tenant, invitation.landlord
    with override(tenant.language or "en"):
        subject = _("%(landlord)s invites you to your tenant portal") % {"landlord": landlord.name}
        body = _(
            "Hello %(name)s,\n\n"
            "%(landlord)s uses Rentledger for rent invoices. In your tenant portal you can "
            "see what you owe, download your invoices and pay by card.\n\n"
            "Set your password within 7 days here:\n%(link)s\n\n"
            "If you did not expect this email, you can ignore it.\n"
        ) % {"name": tenant.full_name, "landlord": landlord.name, "link": link}
    recipient = invitation.email
    transaction.on_commit(
        lambda: send_mail(
            subject=subject, message=body, from_email=None, recipient_list=[recipient]
        )
    )


def tenant_invitation_find(*, token: str, now: datetime | None = None) -> TenantInvitation:
    """The usable invitation of `token`, or a ValidationError saying why not."""
    now = now or timezone.now()
    invitation = (
        TenantInvitation.objects.select_related("landlord", "tenant")
        .filter(token_hash=_hash_token(token or ""))
        .first()
    )
    if invitation is None:
        raise ValidationError(_("This invitation link is not valid."), code="invalid")
    if invitation.accepted_at is not None:
        raise ValidationError(
            _("This invitation has already been used. Log in with your email and password."),
            code="used",
        )
    if invitation.revoked_at is not None:
        raise ValidationError(
            _("This invitation was replaced by a newer one; use the link in the latest email."),
            code="revoked",
        )
    if invitation.expires_at <= now:
        raise ValidationError(
            _("This invitation has expired; ask your landlord for a new one."), code="expired"
        )
    return invitation


def portal_user_exists(*, email: str) -> bool:
    return get_user_model().objects.filter(username__iexact=(email or "").strip()).exists()


@transaction.atomic
def tenant_invitation_accept(
    *, token: str, password: str, user=None, now: datetime | None = None
) -> Tenant:
    """Use an invitation once: link the login with the invitation's email to the
    tenant (creating it with `password`, or checking `password` against the existing
    one), unless `user` is already logged in with that email. The invitation row is
    locked, checked and marked accepted in one transaction."""
    now = now or timezone.now()
    found = tenant_invitation_find(token=token, now=now)
    invitation = TenantInvitation.objects.select_for_update().get(pk=found.pk)
    tenant_invitation_find(token=token, now=now)  # again, now that the row is locked
    User = get_user_model()
    existing = User.objects.filter(username__iexact=invitation.email).first()
    if user is not None and existing is not None and user.pk == existing.pk:
        account = existing
    elif existing is not None:
        if not existing.check_password(password or ""):
            raise ValidationError(
                {"password": _("That is not the password of your existing account.")}
            )
        account = existing
    else:
        account = User(username=invitation.email, email=invitation.email)
        try:
            validate_password(password or "", user=account)
        except ValidationError as exc:
            raise ValidationError({"password": exc.messages}) from exc
        account.set_password(password)
        account.save()
    tenant = Tenant.objects.select_for_update().get(pk=invitation.tenant_id)
    tenant.user = account
    try:
        with transaction.atomic():
            tenant.save(update_fields=["user", "updated_at"])
    except IntegrityError as exc:
        raise ValidationError(
            _("This login already belongs to another tenant of %(landlord)s.")
            % {"landlord": invitation.landlord.name}
        ) from exc
    invitation.accepted_at = now
    invitation.accepted_by = account
    invitation.save(update_fields=["accepted_at", "accepted_by", "updated_at"])
    audit(
        landlord=invitation.landlord,
        actor=account,
        action="portal.join",
        obj=tenant,
        summary=f"{tenant.full_name} joined the tenant portal as {account.email}",
    )
    return tenant


# --- profile --------------------------------------------------------------------------


@transaction.atomic
def tenant_profile_update(*, tenant: Tenant, actor, **fields) -> Tenant:
    """The tenant updates their contact details and language. The name stays the
    landlord's to change (it is on the lease and the invoices); the login email is not
    changed by this (it is the contact address invoices and receipts go to)."""
    unknown = set(fields) - set(PROFILE_FIELDS)
    if unknown:
        raise ValidationError(f"Not editable in the portal: {', '.join(sorted(unknown))}")
    if fields.get("phone"):
        try:
            validate_phone(fields["phone"])
        except ValidationError as exc:
            raise ValidationError({"phone": exc.messages}) from exc
    if "language" in fields and fields["language"] not in PORTAL_LANGUAGES:
        raise ValidationError({"language": _("Choose one of the languages offered.")})
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    changed = {}
    for name, value in fields.items():
        if getattr(tenant, name) != value:
            changed[name] = [str(getattr(tenant, name)), str(value)]
            setattr(tenant, name, value)
    tenant.full_clean(exclude=["user", "landlord"], validate_constraints=False)
    if changed:
        tenant.save(update_fields=[*changed, "updated_at"])
        audit(
            landlord=tenant.landlord,
            actor=actor,
            action="portal.profile",
            obj=tenant,
            summary=f"{tenant.full_name} changed {', '.join(sorted(changed))} in the portal",
            data=changed,
        )
    return tenant


# --- payments -------------------------------------------------------------------------


def payment_key_new(*, tenant: Tenant) -> str:
    """A fresh idempotency key for one rendering of the pay form."""
    return f"{KEY_PREFIX}:{tenant.pk}:{uuid.uuid4().hex}"


def payment_key_valid(*, tenant: Tenant, key: str) -> bool:
    prefix = f"{KEY_PREFIX}:{tenant.pk}:"
    rest = (key or "")[len(prefix) :]
    return (key or "").startswith(prefix) and len(rest) == 32 and rest.isalnum()


@dataclass(frozen=True)
class PayOutcome:
    """What the pay button did. status: succeeded | processing (a bank debit: the
    result comes in days) | requires_action (Stripe.js must finish with
    `client_secret`: 3-D Secure for a card, linking and confirming the account for
    ACH) | failed (`message` says why; nothing was posted)."""

    payment: Payment
    status: str
    client_secret: str = ""
    message: str = ""


def payment_outcome_status(payment: Payment) -> str:
    if payment.status in POSTED_STATUSES:
        return "succeeded"
    if payment.status == PaymentStatus.PROCESSING:
        return "processing"
    if payment.status == PaymentStatus.FAILED:
        return "failed"
    return "requires_action"


def amount_due(*, tenant: Tenant, currency: str, invoice: Invoice | None) -> int:
    """What the tenant can pay now: the invoice's open balance, or the tenant's
    balance in the currency (receivable minus credit), never below zero."""
    landlord = tenant.landlord
    if invoice is not None:
        if invoice.state != InvoiceState.ISSUED:
            return 0
        return max(invoice_balances(landlord=landlord, invoices=[invoice])[invoice.pk], 0)
    return max(tenant_balance(landlord=landlord, tenant=tenant, currency=currency)[currency], 0)


class _KeyLock:
    """A session-level advisory lock on a payment key: a second request with the same
    key waits for the first to finish, then finds its payment. Held outside any
    transaction, so no row lock is held while Stripe answers."""

    def __init__(self, key: str):
        self.key = key

    def __enter__(self):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(hashtextextended(%s, 7))", [self.key])
        return self

    def __exit__(self, *exc):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 7))", [self.key])
        return False


def _outcome_of_existing(payment: Payment) -> PayOutcome:
    status = payment_outcome_status(payment)
    secret = ""
    if status == "requires_action" and payment.stripe_payment_intent_id:
        _payment, secret = payments.payment_intent_create(
            landlord=payment.landlord,
            tenant=payment.tenant,
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            invoice=payment.invoice,
            idempotency_key=payment.idempotency_key,
            allow_partial=True,
        )
    return PayOutcome(payment, status, secret, payment.failure_message)


def _collected_by_stripe_js(method: str) -> bool:
    # ACH: Stripe.js links the account (Financial Connections) and confirms the
    # PaymentIntent itself; there is no payment method to confirm with server-side.
    return method == Method.US_BANK_ACCOUNT


def portal_payment_start(
    *,
    tenant: Tenant,
    idempotency_key: str,
    amount_minor: int,
    currency: str,
    invoice: Invoice | None,
    payment_method_id: str = "",
    method: str = Method.CARD,
    save_method: bool = False,
    actor=None,
) -> PayOutcome:
    """The tenant pays `amount_minor` (one invoice, or the balance of `currency`) by
    card or bank debit.

    Card and SEPA: with the payment method Stripe.js just set up
    (`payment_method_id`), confirmed server-side; a SEPA debit answers `processing`.
    ACH: the PaymentIntent is created unconfirmed and answers `requires_action` with
    its client secret, for Stripe.js to link the account and confirm.

    Exactly once per `idempotency_key`: a repeat returns the first payment's outcome.
    A decline comes back as `failed` with Stripe's reason (nothing posted); a card
    that wants 3-D Secure as `requires_action` with the client secret for Stripe.js.
    The amount rules (partial payments per the landlord's setting, more becomes
    credit up to a month's rent ahead) are payments.services.payment_intent_create's. With `save_method` a card
    or SEPA mandate that was not declined is kept and turned on for autopay.
    """
    landlord = tenant.landlord
    if not payment_key_valid(tenant=tenant, key=idempotency_key):
        raise ValidationError(_("This form has expired; reload the page and try again."))
    currency = invoice.currency if invoice is not None else currency
    payments.payment_method_validate(method=method, currency=currency)
    if _collected_by_stripe_js(method):
        payment_method_id = ""
    elif not (payment_method_id or "").startswith("pm_"):
        if method == Method.SEPA_DEBIT:
            raise ValidationError(_("Enter your IBAN."))
        raise ValidationError(_("Enter your card details."))
    if amount_minor > MAX_MINOR:
        raise ValidationError({"amount": _("This amount is too large.")})
    with _KeyLock(idempotency_key):
        existing = (
            Payment.objects.for_landlord(landlord)
            .select_related("landlord", "tenant", "invoice")
            .filter(idempotency_key=idempotency_key, tenant=tenant)
            .first()
        )
        if existing is not None:
            return _outcome_of_existing(existing)
        if invoice is not None and (
            invoice.landlord_id != landlord.pk or invoice.tenant_id != tenant.pk
        ):
            raise ValidationError({"invoice": _("This invoice is not yours.")})
        due = amount_due(tenant=tenant, currency=currency, invoice=invoice)
        if due <= 0:
            raise ValidationError(_("There is nothing to pay here any more."))
        collected = _collected_by_stripe_js(method)
        try:
            payment, secret = payments.payment_intent_create(
                landlord=landlord,
                tenant=tenant,
                amount_minor=amount_minor,
                currency=currency,
                invoice=invoice,
                idempotency_key=idempotency_key,
                method=method,
                allow_partial=payments.payment_settings_get(landlord=landlord).allow_partial,
                payment_method_id=payment_method_id or None,
                confirm=not collected,
            )
        except payments.PaymentDeclined as declined:
            payment = declined.payment
            payment.refresh_from_db()
            return PayOutcome(
                payment, "failed", "", payment.failure_message or declined.messages[0]
            )
    outcome = PayOutcome(payment, payment_outcome_status(payment), secret, payment.failure_message)
    if save_method and payment_method_id and outcome.status != "failed":
        _save_for_autopay(tenant=tenant, payment_method_id=payment_method_id, actor=actor)
    return outcome


def _save_for_autopay(*, tenant: Tenant, payment_method_id: str, actor) -> None:
    # The payment stands whether or not the method can be kept; the tenant can add it
    # again on the payment methods page.
    try:
        method_save(tenant=tenant, payment_method_id=payment_method_id, autopay=True, actor=actor)
    except (ValidationError, stripe_client.StripeError) as exc:
        log.warning("Payment method of tenant %s not kept for autopay: %s", tenant.pk, exc)


def portal_payment_refresh(*, payment: Payment, now: datetime) -> Payment:
    """The payment as the status page should show it: while it waits (3-D Secure, or
    a webhook that is late), ask Stripe for the intent's state once it has been quiet
    for SYNC_AFTER, and apply it the way the webhook would."""
    waiting = payment.status in (PaymentStatus.REQUIRES_PAYMENT, PaymentStatus.PROCESSING)
    if not waiting or not payment.stripe_payment_intent_id:
        return payment
    if now - payment.updated_at < SYNC_AFTER:
        return payment
    try:
        return payments.payment_intent_sync(payment=payment)
    except stripe_client.StripeError as exc:
        log.info("Payment %s not synced: %s", payment.pk, exc)
        return payment


# --- saved payment methods and autopay ------------------------------------------------


def method_setup_start(*, tenant: Tenant, method: str = Method.CARD) -> str:
    """A SetupIntent's client secret for Stripe.js: `confirmCardSetup` (card),
    `confirmSepaDebitSetup` (SEPA mandate), or `collectBankAccountForSetup` +
    `confirmUsBankAccountSetup` (ACH)."""
    if method not in STRIPE_METHODS:
        raise ValidationError({"method": _("Choose card or bank debit.")})
    return payments.setup_intent_create(
        landlord=tenant.landlord,
        tenant=tenant,
        idempotency_key=f"portal:{uuid.uuid4().hex}",
        method=method,
    )


def method_save(
    *, tenant: Tenant, payment_method_id: str, autopay: bool, actor
) -> SavedPaymentMethod:
    """Keep a card or bank account the tenant set up in the portal, optionally for
    autopay."""
    if not (payment_method_id or "").startswith("pm_"):
        raise ValidationError(_("Enter your card or bank details."))
    # payments.payment_method_save moves an existing row to this tenant before it
    # checks the owner; refuse a method someone else saved here first.
    if (
        SavedPaymentMethod.objects.filter(stripe_payment_method_id=payment_method_id)
        .exclude(tenant=tenant)
        .exists()
    ):
        raise ValidationError(_("This payment method cannot be saved. Enter your details again."))
    return payments.payment_method_save(
        landlord=tenant.landlord,
        tenant=tenant,
        payment_method_id=payment_method_id,
        autopay=autopay,
        actor=actor,
    )


def autopay_toggle(*, tenant: Tenant, saved_method: SavedPaymentMethod | None, actor) -> None:
    """Autopay on with one of the tenant's saved methods, or off (None)."""
    if saved_method is not None and saved_method.tenant_id != tenant.pk:
        raise ValidationError(_("Choose one of your saved payment methods."))
    payments.autopay_set(
        landlord=tenant.landlord, tenant=tenant, saved_method=saved_method, actor=actor
    )


def method_remove(*, tenant: Tenant, saved_method: SavedPaymentMethod, actor) -> None:
    if saved_method.tenant_id != tenant.pk:
        raise ValidationError(_("Choose one of your saved payment methods."))
    payments.payment_method_remove(landlord=tenant.landlord, saved_method=saved_method, actor=actor)
