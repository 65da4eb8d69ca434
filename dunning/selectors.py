"""Reads for the dunning dashboard: arrears and aging, what happens next, the dunning
timelines of invoices and tenants, policies and message templates.

Every function takes the landlord and scopes through `for_landlord`. Open amounts come
from the ledger (`invoices.selectors.receivable_balance`), never from stored totals.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.core.paginator import Page, Paginator
from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    F,
    Min,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from dunning import messages, rules
from dunning.models import (
    Action,
    DunningPolicy,
    DunningPolicyAssignment,
    DunningStep,
    DunningTemplate,
    TenantDunning,
)
from invoices.models import Invoice, InvoiceKind, InvoiceState, Notification
from invoices.selectors import receivable_balance
from ledger.models import AccountCode, LedgerEntry
from tenants.models import Landlord, Lease, Tenant

ARREARS_PAGE_SIZE = 25
TIMELINE_LIMIT = 200

# (name, label, first day past due, last day past due); None = open-ended.
BUCKETS: tuple[tuple[str, str, int | None, int | None], ...] = (
    ("current", "Not yet due", None, 0),
    ("d1_30", "1–30 days", 1, 30),
    ("d31_60", "31–60 days", 31, 60),
    ("d61_90", "61–90 days", 61, 90),
    ("d90_plus", "90+ days", 91, None),
)
BUCKET_NAMES = tuple(name for name, *_rest in BUCKETS)
ARREARS_SORTS = {
    # sort key → ORDER BY; every order ends on tenant and currency so pages are stable.
    "total": ("-total_minor", "tenant__full_name", "tenant_id", "currency"),
    "oldest": ("oldest_due", "tenant__full_name", "tenant_id", "currency"),
    "name": ("tenant__full_name", "tenant_id", "currency"),
}


# --- arrears -----------------------------------------------------------------------------


def _open_invoices(*, landlord: Landlord) -> QuerySet[Invoice]:
    """Issued rent and late-fee invoices with something still open (from the ledger)."""
    return (
        Invoice.objects.for_landlord(landlord)
        .filter(state=InvoiceState.ISSUED, kind__in=[InvoiceKind.RENT, InvoiceKind.LATE_FEE])
        .annotate(balance_minor=receivable_balance())
        .filter(balance_minor__gt=0)
    )


def _bucket_sums(today: date) -> dict[str, Sum]:
    """SUM(balance) per aging bucket, by due date relative to `today` (landlord-local)."""
    sums = {}
    for name, _label, first, last in BUCKETS:
        condition = Q()
        if first is not None:  # due at least `first` days ago
            condition &= Q(due_date__lte=today - timedelta(days=first))
        if last is not None:  # due at most `last` days ago
            condition &= Q(due_date__gte=today - timedelta(days=last))
        sums[name] = Coalesce(
            Sum(Case(When(condition, then=F("balance_minor")), output_field=BigIntegerField())),
            Value(0),
        )
    return sums


@dataclass
class NextStep:
    """The next policy step not yet taken on a tenant's oldest open rent invoice."""

    invoice: Invoice
    key: str
    action: str
    day: date
    channels: str

    @property
    def label(self) -> str:
        return str(Action(self.action).label) if self.action in Action.values else self.action


@dataclass
class ArrearsRow:
    tenant_id: int
    tenant_name: str
    currency: str
    total_minor: int
    oldest_due: date
    buckets: dict[str, int]
    invoices: int
    credit_minor: int = 0
    paused: bool = False
    pause_reason: str = ""
    escalated: bool = False
    escalation_note: str = ""
    next_step: NextStep | None = None
    no_more_steps: bool = False
    days_past_due: int = 0

    @property
    def bucket_list(self) -> list[tuple[str, str, int]]:
        return [(name, label, self.buckets[name]) for name, label, *_days in BUCKETS]


@dataclass
class CurrencyTotals:
    currency: str
    tenants: int
    total_minor: int
    buckets: dict[str, int]

    @property
    def past_due_minor(self) -> int:
        return self.total_minor - self.buckets["current"]

    @property
    def bucket_list(self) -> list[tuple[str, str, int]]:
        return [(name, label, self.buckets[name]) for name, label, *_days in BUCKETS]


@dataclass
class Arrears:
    page: Page
    rows: list[ArrearsRow]
    totals: list[CurrencyTotals] = field(default_factory=list)
    sort: str = "total"
    search: str = ""


def arrears_get(
    *,
    landlord: Landlord,
    today: date,
    search: str = "",
    sort: str = "total",
    page: int | str | None = 1,
    size: int = ARREARS_PAGE_SIZE,
) -> Arrears:
    """Who owes what: one row per tenant and currency with the open amounts of issued
    rent and late-fee invoices, aged by days past due on the landlord's `today`.

    Aggregated in SQL (GROUP BY tenant, currency) and paginated there; per-currency
    totals cover the whole filtered set. Only the rows of the page get their badges,
    credit and next step, each in one query for the page."""
    if sort not in ARREARS_SORTS:
        sort = "total"
    base = _open_invoices(landlord=landlord)
    search = (search or "").strip()
    if search:
        base = base.filter(tenant__full_name__icontains=search)
    buckets = _bucket_sums(today)
    grouped = (
        base.values("tenant_id", "tenant__full_name", "currency")
        .annotate(
            total_minor=Sum("balance_minor"),
            oldest_due=Min("due_date"),
            invoices=Count("pk"),
            **buckets,
        )
        .order_by(*ARREARS_SORTS[sort])
    )
    paginator = Paginator(grouped, size)
    current = paginator.get_page(page)
    rows = [
        ArrearsRow(
            tenant_id=r["tenant_id"],
            tenant_name=r["tenant__full_name"],
            currency=r["currency"],
            total_minor=int(r["total_minor"]),
            oldest_due=r["oldest_due"],
            buckets={name: int(r[name]) for name in BUCKET_NAMES},
            invoices=r["invoices"],
            days_past_due=max(0, (today - r["oldest_due"]).days),
        )
        for r in current.object_list
    ]
    current.object_list = rows
    _decorate(landlord=landlord, rows=rows, today=today)
    return Arrears(
        page=current,
        rows=rows,
        totals=_totals(base, buckets),
        sort=sort,
        search=search,
    )


def _totals(base: QuerySet[Invoice], buckets: dict[str, Sum]) -> list[CurrencyTotals]:
    return [
        CurrencyTotals(
            currency=r["currency"],
            tenants=r["tenants"],
            total_minor=int(r["total_minor"]),
            buckets={name: int(r[name]) for name in BUCKET_NAMES},
        )
        for r in base.values("currency")
        .annotate(
            tenants=Count("tenant_id", distinct=True),
            total_minor=Sum("balance_minor"),
            **buckets,
        )
        .order_by("currency")
    ]


def arrears_totals(*, landlord: Landlord, today: date) -> list[CurrencyTotals]:
    """What tenants owe on issued rent and late-fee invoices, per currency, aged as on
    the arrears page (its totals line), for the overview. One grouped query."""
    return _totals(_open_invoices(landlord=landlord), _bucket_sums(today))


def _decorate(*, landlord: Landlord, rows: list[ArrearsRow], today: date) -> None:
    """Credit, pause/escalation state and the next step for the rows of one page."""
    if not rows:
        return
    tenant_ids = {r.tenant_id for r in rows}
    credit = {
        (c["account__tenant_id"], c["currency"]): -int(c["total"])
        for c in LedgerEntry.objects.for_landlord(landlord)
        .filter(account__code=AccountCode.TENANT_CREDIT, account__tenant_id__in=tenant_ids)
        .values("account__tenant_id", "currency")
        .annotate(total=Sum("amount_minor"))
        .order_by()
    }
    states = {
        s.tenant_id: s
        for s in TenantDunning.objects.for_landlord(landlord).filter(tenant_id__in=tenant_ids)
    }
    upcoming = next_steps(landlord=landlord, tenant_ids=tenant_ids, today=today)
    for row in rows:
        row.credit_minor = max(0, credit.get((row.tenant_id, row.currency), 0))
        state = states.get(row.tenant_id)
        if state is not None:
            row.paused, row.pause_reason = state.paused, state.pause_reason
            row.escalated = state.escalated_at is not None
            row.escalation_note = state.escalation_note
        found = upcoming.get((row.tenant_id, row.currency))
        if found is not None:
            row.next_step = found or None
            row.no_more_steps = found is False


def policy_rules(policy: DunningPolicy) -> rules.PolicyRules:
    """The pure-rules view of a stored policy (what the engine and preview use)."""
    return rules.PolicyRules(
        steps=tuple(
            rules.StepRule(s.offset_days, s.action, s.channels) for s in policy.steps.all()
        ),
        send_window_start=policy.send_window_start,
        send_window_end=policy.send_window_end,
        fee_kind=policy.fee_kind,
        fee_flat_minor=policy.fee_flat_minor,
        fee_percent_bp=policy.fee_percent_bp,
        fee_tiers=tuple((int(t), int(f)) for t, f in policy.fee_tiers or ()),
        daily_fee_minor=policy.daily_fee_minor,
        daily_fee_cap_minor=policy.daily_fee_cap_minor,
        min_overdue_minor=policy.min_overdue_minor,
        max_fee_minor=policy.max_fee_minor,
        retry_days=tuple(policy.retry_days or ()),
    )


# --- what happens next -------------------------------------------------------------------


def policy_rules_by_lease(
    *, landlord: Landlord, lease_ids: Iterable[int]
) -> dict[int, rules.PolicyRules]:
    """The rules each lease follows (its assignment, else the default policy), read only:
    a landlord whose default policy was never created gets the built-in rules the
    engine would create on its first tick."""
    lease_ids = set(lease_ids)
    default = (
        DunningPolicy.objects.for_landlord(landlord)
        .filter(is_default=True)
        .prefetch_related("steps")
        .first()
    )
    default_rules = policy_rules(default) if default is not None else rules.DEFAULT_RULES
    assigned = {
        a.lease_id: policy_rules(a.policy)
        for a in DunningPolicyAssignment.objects.for_landlord(landlord)
        .filter(lease_id__in=lease_ids)
        .select_related("policy")
        .prefetch_related("policy__steps")
    }
    return {lease_id: assigned.get(lease_id, default_rules) for lease_id in lease_ids}


def next_step_for(
    invoice: Invoice, policy: rules.PolicyRules, taken: set[str]
) -> rules.StepRule | None:
    """The first policy step the engine has yet to take on `invoice` (as `_plan` sees
    them: steps dated before the issue date are never taken)."""
    for step in sorted(policy.steps, key=lambda s: rules.step_day(invoice.due_date, s.offset_days)):
        day = rules.step_day(invoice.due_date, step.offset_days)
        if day >= invoice.issue_date and step.key not in taken:
            return step
    return None


def next_steps(
    *, landlord: Landlord, tenant_ids: Iterable[int], today: date
) -> dict[tuple[int, str], NextStep | bool]:
    """Per (tenant, currency): the next step for the oldest open rent invoice, or False
    when every step of its policy has been taken. Four queries whatever the count."""
    oldest: dict[tuple[int, str], Invoice] = {}
    for invoice in (
        _open_invoices(landlord=landlord)
        .filter(kind=InvoiceKind.RENT, tenant_id__in=set(tenant_ids))
        .order_by("tenant_id", "currency", "due_date", "pk")
        .distinct("tenant_id", "currency")
    ):
        oldest[(invoice.tenant_id, invoice.currency)] = invoice
    if not oldest:
        return {}
    policies = policy_rules_by_lease(
        landlord=landlord, lease_ids={i.lease_id for i in oldest.values()}
    )
    taken: dict[int, set[str]] = defaultdict(set)
    for invoice_id, key in (
        DunningStep.objects.for_landlord(landlord)
        .filter(invoice_id__in=[i.pk for i in oldest.values()])
        .values_list("invoice_id", "key")
    ):
        taken[invoice_id].add(key)
    result: dict[tuple[int, str], NextStep | bool] = {}
    for group, invoice in oldest.items():
        step = next_step_for(invoice, policies[invoice.lease_id], taken[invoice.pk])
        if step is None:
            result[group] = False
            continue
        result[group] = NextStep(
            invoice=invoice,
            key=step.key,
            action=step.action,
            # A step whose day has passed is taken on the next tick inside the window.
            day=max(rules.step_day(invoice.due_date, step.offset_days), today),
            channels=step.channels,
        )
    return result


# --- timelines ---------------------------------------------------------------------------


@dataclass
class TimelineEntry:
    step: DunningStep
    notifications: list[Notification]


def _with_notifications(*, landlord: Landlord, steps: Sequence[DunningStep]) -> list[TimelineEntry]:
    """Each step with the outbox rows it queued ("dunning:<step id>:<channel>"); one query."""
    keys = [f"dunning:{s.pk}:{channel}" for s in steps for channel in ("email", "sms")]
    by_step: dict[int, list[Notification]] = defaultdict(list)
    if keys:
        for n in (
            Notification.objects.for_landlord(landlord)
            .filter(dedupe_key__in=keys)
            .order_by("created_at", "pk")
        ):
            by_step[int(n.dedupe_key.split(":")[1])].append(n)
    return [TimelineEntry(step=s, notifications=by_step.get(s.pk, [])) for s in steps]


def _steps(landlord: Landlord) -> QuerySet[DunningStep]:
    return DunningStep.objects.for_landlord(landlord).select_related(
        "invoice", "fee_invoice", "payment"
    )


def invoice_timeline(*, landlord: Landlord, invoice: Invoice) -> list[TimelineEntry]:
    """The dunning steps of an invoice in the order they were taken: for a rent invoice its own steps
    (fees, waivers and payment attempts included); for a late-fee invoice the step that
    charged it and its waiver."""
    if invoice.landlord_id != landlord.pk:
        return []
    if invoice.kind == InvoiceKind.LATE_FEE:
        q = Q(fee_invoice_id=invoice.pk)
    else:
        q = Q(invoice_id=invoice.pk)
    steps = list(_steps(landlord).filter(q).order_by("created_at", "pk"))
    return _with_notifications(landlord=landlord, steps=steps)


def tenant_timeline(
    *, landlord: Landlord, tenant: Tenant, limit: int = TIMELINE_LIMIT
) -> list[TimelineEntry]:
    """Every dunning step across the tenant's invoices, newest first (at most `limit`)."""
    if tenant.landlord_id != landlord.pk:
        return []
    steps = list(
        _steps(landlord).filter(tenant_id=tenant.pk).order_by("-created_at", "-pk")[:limit]
    )
    return _with_notifications(landlord=landlord, steps=steps)


def tenant_dunning_state(*, landlord: Landlord, tenant: Tenant) -> TenantDunning | None:
    return TenantDunning.objects.for_landlord(landlord).filter(tenant_id=tenant.pk).first()


def tenant_fee_invoices(*, landlord: Landlord, tenant: Tenant) -> QuerySet[Invoice]:
    """The tenant's issued late-fee invoices (the ones staff may waive), newest first."""
    return (
        Invoice.objects.for_landlord(landlord)
        .filter(tenant_id=tenant.pk, kind=InvoiceKind.LATE_FEE, state=InvoiceState.ISSUED)
        .select_related("adjusts")
        .order_by("-issue_date", "-pk")
    )


# --- policies ----------------------------------------------------------------------------


def policy_list(*, landlord: Landlord) -> QuerySet[DunningPolicy]:
    """The landlord's policies, default first, with step and lease counts."""
    return (
        DunningPolicy.objects.for_landlord(landlord)
        .annotate(step_count=Count("steps", distinct=True))
        .prefetch_related("steps")
        .order_by("-is_default", "name", "pk")
    )


def policy_lease_counts(*, landlord: Landlord) -> dict[int, int]:
    return dict(
        DunningPolicyAssignment.objects.for_landlord(landlord)
        .values("policy_id")
        .annotate(n=Count("pk"))
        .values_list("policy_id", "n")
        .order_by()
    )


def policy_get(*, landlord: Landlord, pk) -> DunningPolicy:
    from django.shortcuts import get_object_or_404

    return get_object_or_404(
        DunningPolicy.objects.for_landlord(landlord).prefetch_related("steps"), pk=pk
    )


def policy_choices(*, landlord: Landlord) -> QuerySet[DunningPolicy]:
    return DunningPolicy.objects.for_landlord(landlord).order_by("-is_default", "name", "pk")


def lease_assignment(*, landlord: Landlord, lease: Lease) -> DunningPolicyAssignment | None:
    return (
        DunningPolicyAssignment.objects.for_landlord(landlord)
        .filter(lease_id=lease.pk)
        .select_related("policy")
        .first()
    )


# --- message templates -------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateRow:
    kind: str
    kind_label: str
    language: str
    custom: DunningTemplate | None

    @property
    def customised(self) -> bool:
        return self.custom is not None

    @property
    def subject(self) -> str:
        return (
            self.custom.subject
            if self.custom
            else messages.default_template(self.kind, self.language).subject
        )


def template_list(*, landlord: Landlord) -> list[TemplateRow]:
    """Every message kind × language, with the landlord's wording where customised."""
    custom = {(t.kind, t.language): t for t in DunningTemplate.objects.for_landlord(landlord)}
    return [
        TemplateRow(kind, label, language, custom.get((kind, language)))
        for kind, label in messages.KINDS.items()
        for language in messages.LANGUAGES
    ]


def template_get(*, landlord: Landlord, kind: str, language: str) -> messages.Template:
    """The wording in force for a kind and language: the landlord's, else built-in."""
    custom = (
        DunningTemplate.objects.for_landlord(landlord).filter(kind=kind, language=language).first()
    )
    if custom is not None:
        return messages.Template(custom.subject, custom.body, custom.sms)
    return messages.default_template(kind, language)


def template_is_custom(*, landlord: Landlord, kind: str, language: str) -> bool:
    return (
        DunningTemplate.objects.for_landlord(landlord).filter(kind=kind, language=language).exists()
    )
