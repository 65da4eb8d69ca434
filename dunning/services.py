"""Dunning write actions: the hourly engine and the staff's policy, template and
tenant controls.

The engine (`dunning_tick`) works invoice by invoice. For each step whose local day
has come (in the tenant's time zone, inside the policy's sending window) it opens one
transaction that locks the tenant and the invoice (the order payments use), inserts the
step's unique `DunningStep` row — the claim — re-checks the invoice (paid, void,
disputed, paused) and acts: outbox rows for the notice, a late-fee invoice with its
posting, the escalation flag. All of it commits together or not at all, so two ticks
at once, a re-run or a killed worker never send a notice or charge a fee twice.

Payment attempts call Stripe, which cannot sit inside a transaction: the claim commits
as `pending`, `payments.services.autopay_charge` runs (idempotent per invoice and
attempt), and the outcome is recorded in a second transaction. A worker killed in
between leaves the row pending; a later tick takes it over after STUCK_AFTER and calls
`autopay_charge` with the same attempt, which returns the first outcome.

What follows a payment attempt (the "declined" notice, the retry, "update your card")
is derived each tick from the payment's current state, so a bank debit that fails
days later by webhook is handled the same way as a card declined on the spot.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from dunning import messages, rules, selectors
from dunning.models import (
    Channels,
    DunningPolicy,
    DunningPolicyAssignment,
    DunningPolicyStep,
    DunningStep,
    DunningTemplate,
    StepStatus,
    TenantDunning,
)
from invoices import services as invoice_services
from invoices.models import (
    Channel,
    Invoice,
    InvoiceKind,
    InvoiceState,
    Notification,
    NotificationStatus,
)
from invoices.pdf import document_language, format_day
from invoices.selectors import invoice_balances, receivable_balance
from money.currency import format_money
from payments.models import (
    POSTED_STATUSES,
    Dispute,
    DisputeStatus,
    Payment,
    PaymentStatus,
    SavedPaymentMethod,
)
from payments.services import HARD_DECLINE_CODES, autopay_charge
from tenants.models import Landlord, Lease, Tenant
from tenants.services import audit

log = logging.getLogger(__name__)

# A pending payment attempt untouched this long belongs to a worker that died.
STUCK_AFTER = timedelta(minutes=30)
# A payment attempt Stripe could not be reached for after this long is given up.
GIVE_UP_AFTER = timedelta(days=1)
# Invoices due this far back or ahead are looked at (the longest policy is +120 days,
# the earliest reminder -30).
LOOKBACK = timedelta(days=rules.MAX_OFFSET + 10)
LOOKAHEAD = timedelta(days=-rules.MIN_OFFSET + 1)
# Autopay without retries still charges if the due-day tick was missed, for this long.
AUTOPAY_GRACE_DAYS = 3
BATCH = 500
FALLBACK_WINDOW = timedelta(days=7)

OPEN_DISPUTES = (
    DisputeStatus.NEEDS_RESPONSE,
    DisputeStatus.UNDER_REVIEW,
    DisputeStatus.WARNING_NEEDS_RESPONSE,
    DisputeStatus.WARNING_UNDER_REVIEW,
)
PAYMENT_ACTIONS = ("autopay", "retry")
# Declines Stripe advises presenting to the payer as a generic decline.
DISCREET_DECLINE_CODES = frozenset(
    {"fraudulent", "lost_card", "merchant_blacklist", "pickup_card", "stolen_card"}
)
NOTICE_KINDS = set(messages.KINDS)


# --- policies -------------------------------------------------------------------------


def policy_default_get_or_create(*, landlord: Landlord) -> DunningPolicy:
    """The landlord's default policy, created from the built-in one on first use."""
    policy = DunningPolicy.objects.for_landlord(landlord).filter(is_default=True).first()
    if policy is not None:
        return policy
    try:
        with transaction.atomic():
            return _policy_write(
                landlord=landlord,
                policy=None,
                name="Standard",
                data=rules.DEFAULT_RULES,
                is_default=True,
            )
    except IntegrityError:
        return DunningPolicy.objects.for_landlord(landlord).get(is_default=True)


def _policy_write(
    *,
    landlord: Landlord,
    policy: DunningPolicy | None,
    name: str,
    data: rules.PolicyRules,
    is_default: bool,
) -> DunningPolicy:
    if policy is None:
        policy = DunningPolicy(landlord=landlord)
    policy.name = name
    policy.is_default = is_default
    policy.send_window_start = data.send_window_start
    policy.send_window_end = data.send_window_end
    policy.fee_kind = data.fee_kind
    policy.fee_flat_minor = data.fee_flat_minor
    policy.fee_percent_bp = data.fee_percent_bp
    policy.fee_tiers = [list(t) for t in data.fee_tiers]
    policy.daily_fee_minor = data.daily_fee_minor
    policy.daily_fee_cap_minor = data.daily_fee_cap_minor
    policy.min_overdue_minor = data.min_overdue_minor
    policy.max_fee_minor = data.max_fee_minor
    policy.retry_days = list(data.retry_days)
    policy.save()
    policy.steps.all().delete()
    DunningPolicyStep.objects.bulk_create(
        DunningPolicyStep(
            policy=policy,
            position=position,
            offset_days=step.offset_days,
            action=step.action,
            channels=step.channels,
        )
        for position, step in enumerate(data.steps, start=1)
    )
    return policy


@transaction.atomic
def policy_save(
    *,
    landlord: Landlord,
    policy: DunningPolicy | None,
    name: str,
    data: rules.PolicyRules,
    make_default: bool = False,
    actor=None,
) -> DunningPolicy:
    """Create or replace a dunning policy, all or nothing.

    Every problem is reported at once by field (`rules.validate`); on any error
    nothing is written and the previous policy stays in force. Steps already taken on
    invoices are history and stay; the new steps apply from the next tick."""
    name = (name or "").strip()
    errors = rules.validate(data)
    if not name:
        errors.setdefault("name", []).append("Give the policy a name.")
    elif len(name) > DunningPolicy._meta.get_field("name").max_length:
        errors.setdefault("name", []).append("At most 100 characters.")
    elif (
        DunningPolicy.objects.for_landlord(landlord)
        .filter(name=name)
        .exclude(pk=policy.pk if policy else None)
        .exists()
    ):
        errors.setdefault("name", []).append("Another policy has this name.")
    if errors:
        raise ValidationError(errors)
    if policy is not None:
        policy = DunningPolicy.objects.for_landlord(landlord).select_for_update().get(pk=policy.pk)
    is_default = bool(make_default or (policy is not None and policy.is_default))
    if policy is None and not DunningPolicy.objects.for_landlord(landlord).exists():
        is_default = True
    if make_default:
        DunningPolicy.objects.for_landlord(landlord).filter(is_default=True).exclude(
            pk=policy.pk if policy else None
        ).update(is_default=False)
    try:
        with transaction.atomic():
            saved = _policy_write(
                landlord=landlord, policy=policy, name=name, data=data, is_default=is_default
            )
    except IntegrityError:
        # A concurrent save took the name (or the default) between our check and write.
        raise ValidationError(
            {"name": ["Another policy was saved with this name just now; try again."]}
        ) from None
    audit(
        landlord=landlord,
        actor=actor,
        action="dunning.policy.save",
        obj=saved,
        summary=f"Saved dunning policy {saved.name}",
        data={"steps": [s.key for s in data.steps], "fee_kind": data.fee_kind},
    )
    return saved


@transaction.atomic
def policy_assign(
    *, landlord: Landlord, lease: Lease, policy: DunningPolicy | None, actor=None
) -> None:
    """Let a lease follow `policy` instead of the default (None: back to the default)."""
    lease = Lease.objects.for_landlord(landlord).get(pk=lease.pk)
    if policy is None:
        DunningPolicyAssignment.objects.for_landlord(landlord).filter(lease=lease).delete()
        summary = f"Lease {lease.pk} follows the default dunning policy"
    else:
        policy = DunningPolicy.objects.for_landlord(landlord).get(pk=policy.pk)
        DunningPolicyAssignment.objects.update_or_create(
            lease=lease, defaults={"landlord": landlord, "policy": policy}
        )
        summary = f"Lease {lease.pk} follows dunning policy {policy.name}"
    audit(
        landlord=landlord, actor=actor, action="dunning.policy.assign", obj=lease, summary=summary
    )


@transaction.atomic
def template_save(
    *,
    landlord: Landlord,
    kind: str,
    language: str,
    subject: str,
    body: str,
    sms: str,
    actor=None,
) -> DunningTemplate:
    """Save a landlord's wording for one message kind and language.

    Refused, naming the field, when a placeholder is unknown, braces are malformed,
    a part is empty or the SMS is too long; the previous wording stays."""
    errors: dict[str, list[str]] = {}
    if kind not in messages.KINDS:
        errors["kind"] = [f"Unknown message kind {kind!r}."]
    if language not in messages.LANGUAGES:
        errors["language"] = [f"Choose one of {', '.join(messages.LANGUAGES)}."]
    for field, text in (("subject", subject), ("body", body), ("sms", sms)):
        if not (text or "").strip():
            errors.setdefault(field, []).append("This part cannot be empty.")
            continue
        unknown = messages.unknown_placeholders(text)
        if unknown:
            known = ", ".join(f"{{{{ {p} }}}}" for p in messages.PLACEHOLDERS)
            errors.setdefault(field, []).append(
                f"Unknown placeholder {', '.join('{{ ' + u + ' }}' for u in unknown)}. "
                f"Use: {known}."
            )
        elif messages.stray_braces(text):
            errors.setdefault(field, []).append(
                "Braces must form a placeholder like {{ tenant_name }}."
            )
    if sms and len(sms) > messages.SMS_MAX:
        errors.setdefault("sms", []).append(f"At most {messages.SMS_MAX} characters.")
    if len(subject or "") > 300:
        errors.setdefault("subject", []).append("At most 300 characters.")
    if errors:
        raise ValidationError(errors)
    template, _created = DunningTemplate.objects.update_or_create(
        landlord=landlord,
        kind=kind,
        language=language,
        defaults={"subject": subject.strip(), "body": body.strip(), "sms": sms.strip()},
    )
    audit(
        landlord=landlord,
        actor=actor,
        action="dunning.template.save",
        obj=template,
        summary=f"Saved the {kind} message ({language})",
    )
    return template


@transaction.atomic
def template_reset(*, landlord: Landlord, kind: str, language: str, actor=None) -> None:
    """Go back to the built-in wording for one message kind and language."""
    DunningTemplate.objects.for_landlord(landlord).filter(kind=kind, language=language).delete()
    audit(
        landlord=landlord,
        actor=actor,
        action="dunning.template.reset",
        summary=f"Reset the {kind} message ({language}) to the built-in text",
    )


# --- staff controls on a tenant ----------------------------------------------------------


@transaction.atomic
def tenant_pause(*, landlord: Landlord, tenant: Tenant, reason: str, actor=None) -> TenantDunning:
    """Pause dunning for a tenant (a payment plan, a dispute being talked through):
    due steps are recorded as skipped until resumed."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why dunning is paused, e.g. 'payment plan'."})
    tenant = Tenant.objects.for_landlord(landlord).get(pk=tenant.pk)
    state, _created = TenantDunning.objects.select_for_update().get_or_create(
        tenant=tenant, defaults={"landlord": landlord}
    )
    state.paused, state.pause_reason, state.paused_at = True, reason[:300], timezone.now()
    state.save()
    audit(
        landlord=landlord,
        actor=actor,
        action="dunning.pause",
        obj=tenant,
        summary=f"Paused dunning for {tenant}: {reason}",
    )
    return state


@transaction.atomic
def tenant_resume(*, landlord: Landlord, tenant: Tenant, actor=None) -> TenantDunning:
    """Resume dunning for a tenant; the steps skipped meanwhile stay skipped."""
    tenant = Tenant.objects.for_landlord(landlord).get(pk=tenant.pk)
    state, _created = TenantDunning.objects.select_for_update().get_or_create(
        tenant=tenant, defaults={"landlord": landlord}
    )
    state.paused, state.pause_reason, state.paused_at = False, "", None
    state.save()
    audit(
        landlord=landlord,
        actor=actor,
        action="dunning.resume",
        obj=tenant,
        summary=f"Resumed dunning for {tenant}",
    )
    return state


@transaction.atomic
def escalation_clear(*, landlord: Landlord, tenant: Tenant, actor=None) -> None:
    """Take the "needs attention" flag off a tenant once staff have dealt with it."""
    if tenant.landlord_id != landlord.pk:
        raise ValidationError("This tenant does not belong to this landlord.")
    TenantDunning.objects.for_landlord(landlord).filter(tenant_id=tenant.pk).update(
        escalated_at=None, escalation_note="", updated_at=timezone.now()
    )
    audit(
        landlord=landlord,
        actor=actor,
        action="dunning.escalation.clear",
        obj=tenant,
        summary=f"Cleared the escalation of {tenant}",
    )


@transaction.atomic
def late_fee_waive(*, landlord: Landlord, fee_invoice: Invoice, reason: str, actor=None) -> Invoice:
    """Waive a late fee: its invoice is voided by a reversing posting (what was paid
    on it becomes the tenant's credit), and the waiver joins the dunning timeline."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the fee is waived."})
    fee_invoice = Invoice.objects.for_landlord(landlord).get(pk=fee_invoice.pk)
    if fee_invoice.kind != InvoiceKind.LATE_FEE:
        raise ValidationError({"invoice": "Only late-fee invoices can be waived."})
    voided = invoice_services.invoice_void(
        invoice=fee_invoice, reason=f"Late fee waived: {reason}", actor=actor
    )
    DunningStep.objects.create(
        landlord=landlord,
        invoice_id=fee_invoice.adjusts_id,
        tenant_id=fee_invoice.tenant_id,
        key=f"waive#{fee_invoice.pk}",
        action="waive",
        scheduled_on=timezone.localdate(timezone.now(), landlord.tz),
        status=StepStatus.DONE,
        detail=f"Fee {fee_invoice.number} waived: {reason}"[:500],
        fee_invoice=fee_invoice,
        finished_at=timezone.now(),
    )
    return voided


# --- the engine -------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """A step whose time has come on one invoice."""

    key: str
    action: str
    day: date
    channels: str = Channels.NONE
    attempt: int | None = None
    superseded: bool = False
    reclaim: bool = False

    @property
    def is_payment(self) -> bool:
        return self.action in PAYMENT_ACTIONS


@dataclass
class _Batch:
    """What planning a batch of invoices needs, loaded in a few queries."""

    policies: dict[int, rules.PolicyRules]  # lease id → rules
    steps: dict[int, dict[str, DunningStep]]  # invoice id → key → step
    autopay: dict[int, str]  # tenant id → autopay payment method id


def _rules_by_lease(invoices: list[Invoice]) -> dict[int, rules.PolicyRules]:
    by_landlord: dict[int, list[Invoice]] = defaultdict(list)
    for invoice in invoices:
        by_landlord[invoice.landlord_id].append(invoice)
    out: dict[int, rules.PolicyRules] = {}
    for group in by_landlord.values():
        landlord = group[0].landlord
        policy_default_get_or_create(landlord=landlord)  # the engine's first tick creates it
        out.update(
            selectors.policy_rules_by_lease(
                landlord=landlord, lease_ids={i.lease_id for i in group}
            )
        )
    return out


def _steps_taken(invoices: list[Invoice]) -> dict[int, dict[str, DunningStep]]:
    """Steps taken per invoice id, by key. A rent invoice that replaces a voided one
    (its lease ended after billing, invoices decision 0017) carries on where the
    original's dunning stood: a reminder, notice or fee taken there counts as taken,
    so the tenant hears nothing twice and the fee cap holds for the month's rent."""
    replaced = {i.adjusts_id: i.pk for i in invoices if i.kind == InvoiceKind.RENT and i.adjusts_id}
    steps: dict[int, dict[str, DunningStep]] = defaultdict(dict)
    rows = DunningStep.objects.filter(
        invoice_id__in=[i.pk for i in invoices] + list(replaced)
    ).select_related("payment")
    # The original's first, so the invoice's own step wins for a key both have.
    for step in sorted(rows, key=lambda s: s.invoice_id not in replaced):
        steps[replaced.get(step.invoice_id, step.invoice_id)][step.key] = step
    return steps


def _load_batch(invoices: list[Invoice]) -> _Batch:
    steps = _steps_taken(invoices)
    autopay = dict(
        SavedPaymentMethod.objects.filter(
            tenant_id__in={i.tenant_id for i in invoices}, autopay=True, detached_at__isnull=True
        ).values_list("tenant_id", "stripe_payment_method_id")
    )
    return _Batch(policies=_rules_by_lease(invoices), steps=steps, autopay=autopay)


def _candidates(*, now: datetime, landlord: Landlord | None = None):
    """Issued rent invoices with something open, due recently or soon, oldest first.

    The window is wide enough for every time zone: each invoice's own local day is
    worked out in `_plan`."""
    today = now.date()
    qs = (
        Invoice.objects.filter(
            state=InvoiceState.ISSUED,
            kind=InvoiceKind.RENT,
            due_date__gte=today - LOOKBACK,
            due_date__lte=today + LOOKAHEAD,
        )
        .annotate(balance_minor=receivable_balance())
        .filter(balance_minor__gt=0)
        .select_related("landlord", "tenant")
        .order_by("pk")
    )
    if landlord is not None:
        qs = qs.filter(landlord=landlord)
    return qs


def _local_now(invoice: Invoice, now: datetime) -> datetime:
    return now.astimezone(invoice.tenant.tz_for(invoice.landlord))


def _plan(invoice: Invoice, batch: _Batch, now: datetime) -> list[Planned]:
    """The steps of `invoice` to take now: due in the tenant's local day, not taken
    yet, inside the sending window."""
    policy = batch.policies[invoice.lease_id]
    local = _local_now(invoice, now)
    if not rules.in_window(policy, local.time()):
        return []
    today = local.date()
    taken = batch.steps.get(invoice.pk, {})
    # Superseding looks at every step whose day has come, taken or not: a tick that
    # sees the newest notice already taken (by a concurrent tick, or one that died
    # half-way) must not send an older one as if it were the latest.
    came = [
        s
        for s in policy.steps
        if invoice.issue_date <= rules.step_day(invoice.due_date, s.offset_days) <= today
    ]
    act, old = rules.superseded(came)
    # Payment attempts first: a charge that succeeds makes the day's notices moot
    # (no "overdue" message at the minute the retry pays the rent).
    planned = _payment_plan(invoice, policy, taken, batch.autopay, today, now)
    planned += [
        Planned(
            s.key,
            s.action,
            rules.step_day(invoice.due_date, s.offset_days),
            s.channels,
            superseded=is_old,
        )
        for steps, is_old in ((act, False), (old, True))
        for s in steps
        if s.key not in taken
    ]
    planned += _daily_fee_plan(invoice, policy, taken, today)
    return planned


def _daily_fee_plan(
    invoice: Invoice, policy: rules.PolicyRules, taken: dict[str, DunningStep], today: date
) -> list[Planned]:
    fee_step = next((s for s in policy.steps if s.action == "late_fee"), None)
    if not policy.daily_fee_minor or fee_step is None:
        return []
    if taken.get(fee_step.key) is None:
        return []  # daily fees start the day after the late fee was dealt with
    # Today's fee only: a day missed (no tick, or a debit in flight that later failed)
    # is not charged afterwards in a burst of back-dated fee invoices.
    if today <= rules.step_day(invoice.due_date, fee_step.offset_days):
        return []
    key = f"daily_fee@{today.isoformat()}"
    return [] if key in taken else [Planned(key, "daily_fee", today)]


def _payment_plan(
    invoice: Invoice,
    policy: rules.PolicyRules,
    taken: dict[str, DunningStep],
    autopay: dict[int, str],
    today: date,
    now: datetime,
) -> list[Planned]:
    attempts = sorted(
        (s for s in taken.values() if s.action in PAYMENT_ACTIONS), key=lambda s: s.attempt or 0
    )
    if not attempts:
        last_day = policy.retry_days[-1] if policy.retry_days else AUTOPAY_GRACE_DAYS
        if (
            invoice.tenant_id in autopay
            and invoice.due_date <= today <= invoice.due_date + timedelta(days=last_day)
        ):
            return [Planned("autopay#1", "autopay", invoice.due_date, attempt=1)]
        return []
    last = attempts[-1]
    n = last.attempt or 1
    if last.status == StepStatus.PENDING:
        if last.updated_at < now - STUCK_AFTER:
            return [Planned(last.key, last.action, last.scheduled_on, attempt=n, reclaim=True)]
        return []
    payment = last.payment
    if last.status != StepStatus.DONE or payment is None:
        return []
    if payment.status in POSTED_STATUSES or payment.status == PaymentStatus.PROCESSING:
        return []
    if payment.status != PaymentStatus.FAILED:
        return []
    code = payment.decline_code or payment.failure_code
    hard = code in HARD_DECLINE_CODES
    retry_day = (
        invoice.due_date + timedelta(days=policy.retry_days[n - 1])
        if n - 1 < len(policy.retry_days)
        else None
    )
    planned = []
    notice = "update_method" if hard or retry_day is None else "payment_failed"
    if f"{notice}#{n}" not in taken:
        planned.append(Planned(f"{notice}#{n}", notice, today, Channels.EMAIL_THEN_SMS, attempt=n))
    method_changed = autopay.get(invoice.tenant_id, payment.stripe_payment_method_id) != (
        payment.stripe_payment_method_id
    )
    if retry_day is not None and retry_day <= today and (not hard or method_changed):
        planned.append(Planned(f"retry#{n + 1}", "retry", retry_day, attempt=n + 1))
    return planned


def _lock(invoice_id: int) -> Invoice:
    """Lock the tenant, then the invoice: the order payments and voids use."""
    tenant_id = Invoice.objects.values_list("tenant_id", flat=True).get(pk=invoice_id)
    list(Tenant.objects.select_for_update().filter(pk=tenant_id).values_list("pk"))
    return (
        Invoice.objects.select_for_update(of=("self",))
        .select_related("landlord", "tenant")
        .get(pk=invoice_id)
    )


def _stop_reason(invoice: Invoice, *, balance: int) -> str:
    """Why no step should act on this invoice now ("" if none)."""
    if invoice.state == InvoiceState.VOID:
        return "Invoice voided"
    if balance <= 0:
        return "Paid"
    if Dispute.objects.filter(
        payment__allocations__invoice=invoice, status__in=OPEN_DISPUTES
    ).exists():
        return "A payment on this invoice is disputed"
    state = TenantDunning.objects.filter(tenant_id=invoice.tenant_id, paused=True).first()
    if state is not None:
        return f"Dunning paused: {state.pause_reason}"
    return ""


def _claim(invoice: Invoice, planned: Planned, *, status: str) -> DunningStep | None:
    try:
        with transaction.atomic():
            return DunningStep.objects.create(
                landlord_id=invoice.landlord_id,
                invoice=invoice,
                tenant_id=invoice.tenant_id,
                key=planned.key,
                action=planned.action,
                channels=planned.channels,
                scheduled_on=planned.day,
                status=status,
                attempt=planned.attempt,
            )
    except IntegrityError:
        return None  # another tick took this step first


def _finish(step: DunningStep, *, status: str, detail: str, now: datetime) -> None:
    step.status = status
    step.detail = detail[:500]
    step.finished_at = now
    step.save()


def _payment_in_flight(invoice: Invoice) -> bool:
    """Whether a payment towards this invoice (or the tenant's whole balance) is still
    processing: a bank debit takes days, and until it settles the balance looks open.

    Steps wait rather than act or skip: chasing or fining a tenant who has paid is
    wrong, charging autopay again would debit twice, and if the debit fails the steps
    due meanwhile are taken on the next tick (only the latest notice of them).

    An autopay attempt whose Stripe call is under way (its step still `pending`) counts
    too: a late fee or a reminder must not race a charge that is about to succeed."""
    return (
        _processing_towards(invoice).exists()
        or DunningStep.objects.filter(invoice=invoice, status=StepStatus.PENDING).exists()
    )


def _processing_towards(invoice: Invoice):
    """The tenant's payments still processing towards this invoice or their balance."""
    return Payment.objects.filter(
        tenant_id=invoice.tenant_id, status=PaymentStatus.PROCESSING
    ).filter(Q(invoice_id=invoice.pk) | Q(invoice__isnull=True))


def _reclaim_held(invoice: Invoice, step: DunningStep, *, now: datetime) -> str:
    """Why a stuck payment attempt must not call Stripe again now ("" if it may).

    Its first call may never have reached Stripe, and the charge it would send is the
    open amount at the time of the claim: the tenant may have paid since (in part, or
    by a bank debit still processing). Sending it then charges them twice. A first
    call that did reach Stripe needs no second one: its webhook posts the outcome."""
    if step.invoice_id != invoice.pk:
        # Claimed on the invoice `invoice` replaces: that one is void, and its charge
        # is for the whole old rent.
        _finish(
            step,
            status=StepStatus.SKIPPED,
            detail=f"Invoice voided, replaced by {invoice.number}: not charged again",
            now=now,
        )
        return "skipped"
    attempt = Payment.objects.filter(
        landlord_id=invoice.landlord_id, idempotency_key=f"autopay:{invoice.pk}:{step.attempt}"
    ).first()
    others = _processing_towards(invoice)
    if attempt is not None:
        others = others.exclude(pk=attempt.pk)
    if others.exists():
        return "waiting"
    balance = invoice_balances(landlord=invoice.landlord, invoices=[invoice])[invoice.pk]
    reason = _stop_reason(invoice, balance=balance)
    if (
        not reason
        and attempt is not None
        and attempt.status == PaymentStatus.REQUIRES_PAYMENT
        and attempt.amount_minor > balance
    ):
        reason = "Not charged again: the open amount fell since the attempt started"
    if reason:
        _finish(step, status=StepStatus.SKIPPED, detail=reason, now=now)
        return "skipped"
    return ""


def _take(invoice_id: int, planned: Planned, *, now: datetime) -> str:
    """Take one non-payment step in one transaction; returns what happened."""
    with transaction.atomic():
        invoice = _lock(invoice_id)
        if _payment_in_flight(invoice):
            return "waiting"
        step = _claim(invoice, planned, status=StepStatus.DONE)
        if step is None:
            return "taken"
        if planned.superseded:
            _finish(
                step,
                status=StepStatus.SKIPPED,
                detail="Superseded by a later notice due at the same time",
                now=now,
            )
            return "skipped"
        balance = invoice_balances(landlord=invoice.landlord, invoices=[invoice])[invoice.pk]
        reason = _stop_reason(invoice, balance=balance)
        if reason:
            _finish(step, status=StepStatus.SKIPPED, detail=reason, now=now)
            return "skipped"
        return ACTIONS[planned.action](invoice, step, balance=balance, now=now)


def _notice(invoice: Invoice, step: DunningStep, *, balance: int, now: datetime) -> str:
    kind = step.action
    detail = _queue_messages(invoice, step, kind=kind, balance=balance, now=now)
    _finish(step, status=StepStatus.DONE, detail=detail, now=now)
    return "done"


def _fees_charged(invoice: Invoice, *, daily_only: bool = False) -> int:
    """Late fees standing for the invoice's rent: its own, and those charged on the
    invoice it replaces (`_steps_taken`), so a replacement never restarts the cap."""
    rent_ids = [invoice.pk]
    if invoice.kind == InvoiceKind.RENT and invoice.adjusts_id:
        rent_ids.append(invoice.adjusts_id)
    qs = Invoice.objects.filter(
        adjusts_id__in=rent_ids, kind=InvoiceKind.LATE_FEE, state=InvoiceState.ISSUED
    )
    if daily_only:
        qs = qs.filter(
            pk__in=DunningStep.objects.filter(invoice_id__in=rent_ids, action="daily_fee").values(
                "fee_invoice_id"
            )
        )
    return qs.aggregate(total=Sum("subtotal_minor"))["total"] or 0


def _policy_for(invoice: Invoice) -> rules.PolicyRules:
    return _rules_by_lease([invoice])[invoice.lease_id]


def _late_fee(invoice: Invoice, step: DunningStep, *, balance: int, now: datetime) -> str:
    policy = _policy_for(invoice)
    charged = _fees_charged(invoice)
    if step.action == "daily_fee":
        fee = rules.daily_fee_amount(
            policy,
            overdue_minor=balance,
            daily_charged_minor=_fees_charged(invoice, daily_only=True),
            charged_minor=charged,
        )
        label = f"Daily late fee {step.scheduled_on.isoformat()} on {invoice.number}"
    else:
        fee = rules.late_fee_amount(policy, overdue_minor=balance, charged_minor=charged)
        label = f"Late fee on {invoice.number} (due {invoice.due_date.isoformat()})"
    if fee <= 0:
        if balance < policy.min_overdue_minor:
            why = "Open amount below the minimum for a late fee"
        elif policy.max_fee_minor and charged >= policy.max_fee_minor:
            why = "Late fees on this invoice reached the legal maximum"
        else:
            why = "No fee due under the policy"
        _finish(step, status=StepStatus.SKIPPED, detail=why, now=now)
        return "skipped"
    fee_invoice = invoice_services.late_fee_invoice_issue(
        invoice=invoice,
        amount_minor=fee,
        description=label,
        issue_date=step.scheduled_on,
    )
    step.fee_invoice = fee_invoice
    lang = document_language(invoice.tenant.language)
    amount = format_money(fee_invoice.total_minor, fee_invoice.currency, lang)
    # The timeline is read by staff (the dashboard is English); the message by the tenant.
    staff_amount = format_money(fee_invoice.total_minor, fee_invoice.currency, "en")
    detail = f"Charged {staff_amount} ({fee_invoice.number})"
    if step.action != "daily_fee":
        sent = _queue_messages(
            invoice,
            step,
            kind="late_fee",
            balance=balance,
            now=now,
            extra={"fee_amount": amount, "fee_invoice_number": fee_invoice.number},
        )
        detail = f"{detail}; {sent}"
    _finish(step, status=StepStatus.DONE, detail=detail, now=now)
    return "done"


def _escalate(invoice: Invoice, step: DunningStep, *, balance: int, now: datetime) -> str:
    days = (step.scheduled_on - invoice.due_date).days
    note = f"{invoice.number} unpaid {days} days after its due date"
    state, _created = TenantDunning.objects.get_or_create(
        tenant_id=invoice.tenant_id, defaults={"landlord_id": invoice.landlord_id}
    )
    if state.escalated_at is None:
        state.escalated_at = now
        state.escalation_note = note[:300]
        state.save()
    _finish(step, status=StepStatus.DONE, detail=f"Flagged for attention: {note}", now=now)
    return "done"


ACTIONS = {
    "reminder": _notice,
    "due_notice": _notice,
    "overdue_notice": _notice,
    "final_notice": _notice,
    "payment_failed": _notice,
    "update_method": _notice,
    "late_fee": _late_fee,
    "daily_fee": _late_fee,
    "escalate": _escalate,
}


def message_context(
    invoice: Invoice, *, balance: int, today: date, lang: str, extra: dict | None = None
) -> dict[str, str]:
    site = settings.SITE_URL.rstrip("/")
    context = {
        "tenant_name": invoice.tenant.full_name,
        "landlord_name": invoice.landlord.name,
        "invoice_number": invoice.number or "",
        "amount_due": format_money(balance, invoice.currency, lang),
        "invoice_total": format_money(invoice.total_minor, invoice.currency, lang),
        "due_date": format_day(invoice.due_date, language=lang),
        "days_overdue": str(max(0, (today - invoice.due_date).days)),
        "fee_amount": "",
        "fee_invoice_number": "",
        "retry_date": "",
        "decline_reason": "",
        "portal_url": f"{site}/portal/invoices/{invoice.pk}/",
        "payment_method_url": f"{site}/portal/cards/",
    }
    context.update(extra or {})
    return context


def _payment_context(invoice: Invoice, step: DunningStep, lang: str) -> dict[str, str]:
    attempt = (
        DunningStep.objects.filter(
            invoice=invoice, action__in=PAYMENT_ACTIONS, attempt=step.attempt
        )
        .select_related("payment")
        .first()
    )
    payment = attempt.payment if attempt else None
    reason = ""
    if payment is not None:
        # The code says why ("insufficient funds"); Stripe's message is mostly the
        # generic "Your card was declined." Codes that hint at fraud are not spelled
        # out to the payer (Stripe's advice), they read as a plain decline.
        code = payment.decline_code or payment.failure_code
        if code in DISCREET_DECLINE_CODES:
            reason = "declined by the bank"
        elif code and code != "card_declined":
            reason = code.replace("_", " ")
        else:
            reason = (payment.failure_message or "").strip().rstrip(".")
    policy = _policy_for(invoice)
    n = step.attempt or 1
    retry = ""
    if n - 1 < len(policy.retry_days):
        retry = format_day(
            invoice.due_date + timedelta(days=policy.retry_days[n - 1]), language=lang
        )
    return {"decline_reason": reason or "declined", "retry_date": retry}


def _queue_messages(
    invoice: Invoice,
    step: DunningStep,
    *,
    kind: str,
    balance: int,
    now: datetime,
    extra: dict | None = None,
    channels: str | None = None,
) -> str:
    """Outbox rows for the step's message, one per channel, sent after commit.
    Returns a short account for the timeline."""
    tenant = invoice.tenant
    channels = channels or step.channels
    wanted: list[str] = []
    if channels in (Channels.EMAIL, Channels.BOTH):
        wanted.append(Channel.EMAIL)
    if channels in (Channels.SMS, Channels.BOTH):
        wanted.append(Channel.SMS)
    if channels == Channels.EMAIL_THEN_SMS:
        # SMS straight away when there is no email; otherwise only if the email fails.
        wanted.append(Channel.EMAIL if tenant.email else Channel.SMS)
    if not wanted:
        return "No message (the step has no channel)"
    lang = document_language(tenant.language)
    today = _local_now(invoice, now).date()
    context = message_context(invoice, balance=balance, today=today, lang=lang, extra=extra)
    if kind in ("payment_failed", "update_method"):
        context.update(_payment_context(invoice, step, lang))
    template = selectors.template_get(landlord=invoice.landlord, kind=kind, language=lang)
    subject = " ".join(messages.render(template.subject, context).split())
    ids, sent, missing = [], [], []
    for channel in wanted:
        address = tenant.email if channel == Channel.EMAIL else tenant.phone
        if not address:
            missing.append("no email address" if channel == Channel.EMAIL else "no phone number")
            continue
        text = messages.render(template.body if channel == Channel.EMAIL else template.sms, context)
        try:
            with transaction.atomic():
                row = Notification.objects.create(
                    landlord_id=invoice.landlord_id,
                    dedupe_key=f"dunning:{step.pk}:{channel}",
                    kind=f"dunning_{kind}",
                    channel=channel,
                    tenant=tenant,
                    invoice=invoice,
                    to_address=address,
                    subject=subject[:300],
                    body=text.strip() + ("\n" if channel == Channel.EMAIL else ""),
                )
        except IntegrityError:
            continue
        ids.append(row.pk)
        sent.append(channel)
    if ids:
        transaction.on_commit(lambda: _send_soon(ids))
    parts = []
    if sent:
        parts.append(f"{messages.KINDS.get(kind, kind)} queued by {' and '.join(sent)}")
    if missing:
        parts.append(", ".join(missing))
    return "; ".join(parts) or "No message"


def _send_soon(ids: list[int]) -> None:
    from invoices.tasks import notifications_send

    try:
        notifications_send.delay(notification_ids=ids)
    except Exception:  # broker down: the outbox sweep sends them within minutes
        log.warning("Could not enqueue dunning notifications %s; the sweep will", ids)


def _attempt(invoice_id: int, planned: Planned, *, now: datetime) -> str:
    """One off-session payment attempt: claim, call Stripe, record (see module doc)."""
    with transaction.atomic():
        invoice = _lock(invoice_id)
        if planned.reclaim:
            # The fence: only one tick moves a stuck claim forward. Read under the
            # invoice lock, so a tick that waited for another's takeover sees it
            # fresh (not stuck) and backs off; comparing `updated_at` with the value
            # just read here would let every waiting tick through.
            # A replacement carries on the steps of the invoice it replaces
            # (`_steps_taken`), a claim left stuck there among them.
            ids = [invoice.pk]
            if invoice.kind == InvoiceKind.RENT and invoice.adjusts_id:
                ids.append(invoice.adjusts_id)
            step = min(
                DunningStep.objects.filter(invoice_id__in=ids, key=planned.key),
                key=lambda s: s.invoice_id != invoice.pk,
            )
            if step.status != StepStatus.PENDING or step.updated_at >= now - STUCK_AFTER:
                return "taken"
            DunningStep.objects.filter(pk=step.pk).update(updated_at=now)
            if step.created_at < now - GIVE_UP_AFTER:
                _finish(
                    step,
                    status=StepStatus.FAILED,
                    detail="Gave up: Stripe could not be reached for a day",
                    now=now,
                )
                return "failed"
            held = _reclaim_held(invoice, step, now=now)
            if held:
                return held
        else:
            if _payment_in_flight(invoice):
                return "waiting"
            step = _claim(invoice, planned, status=StepStatus.PENDING)
            if step is None:
                return "taken"
            balance = invoice_balances(landlord=invoice.landlord, invoices=[invoice])[invoice.pk]
            reason = _stop_reason(invoice, balance=balance)
            if reason:
                _finish(step, status=StepStatus.SKIPPED, detail=reason, now=now)
                return "skipped"
    result = autopay_charge(
        landlord=invoice.landlord, invoice=invoice, attempt=planned.attempt or 1, now=now
    )
    with transaction.atomic():
        step = DunningStep.objects.select_for_update().get(pk=step.pk)
        if step.status != StepStatus.PENDING:
            return "taken"
        step.payment = result.payment
        step.outcome = result.status
        if result.status == "error":
            step.detail = f"Stripe not reached, will try again: {result.message or result.reason}"[
                :500
            ]
            step.save()
            return "error"
        if result.status == "skipped":
            _finish(
                step, status=StepStatus.SKIPPED, detail=result.reason.replace("_", " "), now=now
            )
            return "skipped"
        amount = ""
        if result.payment is not None:
            amount = format_money(result.payment.amount_minor, result.payment.currency, "en") + " "
        detail = {
            "succeeded": f"Charged {amount}successfully",
            "processing": f"Bank debit of {amount}submitted; the bank confirms in a few days",
            "declined": f"Declined: {result.message or result.decline_code or result.failure_code}",
            "requires_action": "The bank asks the tenant to confirm the payment",
        }.get(result.status, result.status)
        if result.hard_decline:
            detail += " (no retry: the tenant must update the payment method)"
        _finish(step, status=StepStatus.DONE, detail=detail, now=now)
        return result.status


@dataclass(frozen=True)
class TickResult:
    invoices: int
    counts: dict[str, int]


def dunning_tick(*, now: datetime, landlord: Landlord | None = None) -> TickResult:
    """Take every dunning step whose time has come (the hourly beat task).

    Safe to run concurrently and repeatedly: see the module docstring. Each step is its
    own transaction, so one failing step (logged, retried next tick) does not hold up
    the others. `landlord` limits the tick to one landlord (operators, tests)."""
    counts: Counter[str] = Counter()
    seen = 0
    last_pk = 0
    while True:
        invoices = list(_candidates(now=now, landlord=landlord).filter(pk__gt=last_pk)[:BATCH])
        if not invoices:
            break
        last_pk = invoices[-1].pk
        seen += len(invoices)
        batch = _load_batch(invoices)
        for invoice in invoices:
            _work_invoice(invoice, batch, now=now, counts=counts)
    counts.update(_fallbacks(now=now, landlord=landlord))
    return TickResult(invoices=seen, counts=dict(counts))


def _work_invoice(invoice: Invoice, batch: _Batch, *, now: datetime, counts: Counter) -> None:
    # Twice: a payment attempt taken in the first pass may call for its notice at once.
    for _pass in range(2):
        planned = _plan(invoice, batch, now)
        if not planned:
            return
        attempted = False
        for step in planned:
            try:
                if step.is_payment:
                    outcome = _attempt(invoice.pk, step, now=now)
                    attempted = True
                else:
                    outcome = _take(invoice.pk, step, now=now)
            except Exception:
                log.exception("Dunning step %s on invoice %s failed", step.key, invoice.pk)
                outcome = "error"
            counts[outcome] += 1
            if step.is_payment and outcome in ("succeeded", "processing", "taken", "error"):
                # Paid, being paid, or another tick's charge in flight: the remaining
                # steps are moot or must wait for its outcome.
                return
        if not attempted:
            return
        batch.steps[invoice.pk] = _steps_taken([invoice]).get(invoice.pk, {})


def _fallbacks(*, now: datetime, landlord: Landlord | None = None) -> Counter:
    """Send the SMS for "email, then SMS" steps whose email failed or bounced."""
    counts: Counter[str] = Counter()
    failed = Notification.objects.filter(
        kind__startswith="dunning_",
        channel=Channel.EMAIL,
        status__in=[NotificationStatus.FAILED, NotificationStatus.BOUNCED],
        updated_at__gte=now - FALLBACK_WINDOW,
    )
    if landlord is not None:
        failed = failed.filter(landlord=landlord)
    step_ids = {
        int(key.split(":")[1])
        for key in failed.values_list("dedupe_key", flat=True)
        if key.count(":") == 2
    }
    if not step_ids:
        return counts
    already = set(
        Notification.objects.filter(
            dedupe_key__in=[f"dunning:{pk}:sms" for pk in step_ids]
        ).values_list("dedupe_key", flat=True)
    )
    for step in DunningStep.objects.filter(
        pk__in=step_ids, channels=Channels.EMAIL_THEN_SMS, status=StepStatus.DONE
    ).select_related("invoice__landlord", "invoice__tenant"):
        if f"dunning:{step.pk}:sms" in already:
            continue
        # The SMS keeps to the sending window like every other message: a bounce
        # reported at night is followed up in the morning.
        if not rules.in_window(_policy_for(step.invoice), _local_now(step.invoice, now).time()):
            continue
        with transaction.atomic():
            invoice = _lock(step.invoice_id)
            # Another tick may have sent it since `already` was read.
            if Notification.objects.filter(dedupe_key=f"dunning:{step.pk}:sms").exists():
                continue
            balance = invoice_balances(landlord=invoice.landlord, invoices=[invoice])[invoice.pk]
            if _stop_reason(invoice, balance=balance) or _payment_in_flight(invoice):
                continue
            kind = step.action
            if kind not in NOTICE_KINDS:
                continue
            extra = {}
            if step.fee_invoice_id:
                fee = step.fee_invoice
                extra = {
                    "fee_amount": format_money(
                        fee.total_minor, fee.currency, document_language(invoice.tenant.language)
                    ),
                    "fee_invoice_number": fee.number,
                }
            detail = _queue_messages(
                invoice,
                step,
                kind=kind,
                balance=balance,
                now=now,
                extra=extra,
                channels=Channels.SMS,
            )
            step.detail = f"{step.detail}; email failed, {detail}"[:500]
            step.save(update_fields=["detail", "updated_at"])
            counts["fallback"] += 1
    return counts


def notification_bounce_record(*, notification: Notification, reason: str) -> None:
    """A delivery report said this message did not arrive (a bounce, an SMS status
    callback): mark it bounced so the fallback channel takes over on the next tick."""
    Notification.objects.filter(pk=notification.pk).update(
        status=NotificationStatus.BOUNCED,
        last_error=(reason or "Bounced")[:2000],
        updated_at=timezone.now(),
    )
