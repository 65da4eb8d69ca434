"""Dunning reads: arrears and aging, the next step, timelines, templates. Landlord B
always has look-alike invoices, steps and messages, so a missing scope shows them."""

from datetime import UTC, date, datetime

import pytest

from dunning import selectors, services
from dunning.models import DunningPolicy, DunningStep, StepStatus, TenantDunning
from dunning.rules import PolicyRules, StepRule
from invoices import services as invoice_services
from invoices.models import Invoice, InvoiceKind
from payments.models import Method
from payments.services import manual_payment_record
from tests.factories import ChargeFactory, LeaseFactory, TenantFactory, UnitFactory
from tests.invoices.factories import NotificationFactory, lease_with_charges

MONTHS = [date(2026, m, 1) for m in (8, 9, 10, 11, 12)]
# lease_with_charges: billed on the 1st, due 5 days later (the 6th).
DEC_DUE = date(2026, 12, 6)
REAL_PAST = date(2026, 11, 20)  # manual payments may not be dated in the future


def bill(landlord, months=MONTHS):
    for month in months:
        invoice_services.billing_run_execute(
            landlord=landlord,
            period_start=month,
            as_of=month.replace(day=28),
            started_by="test",
            on_schedule=True,
        )


def pay(invoice: Invoice, amount: int) -> None:
    manual_payment_record(
        landlord=invoice.landlord,
        tenant=invoice.tenant,
        amount_minor=amount,
        currency=invoice.currency,
        method=Method.BANK_TRANSFER,
        reference="test",
        received_on=REAL_PAST,
        actor=None,
        invoice=invoice,
    )


def invoices_of(lease) -> dict[date, Invoice]:
    return {i.period_start: i for i in Invoice.objects.filter(lease=lease, kind=InvoiceKind.RENT)}


@pytest.fixture
def theirs(other_landlord):
    """Landlord B owes in every bucket too, under a name that matches searches for A."""
    lease = lease_with_charges(landlord=other_landlord, renter="Bianca Brightside Acme")
    bill(other_landlord)
    return lease


def row_for(arrears, name):
    (row,) = [r for r in arrears.rows if r.tenant_name == name]
    return row


# --- arrears -----------------------------------------------------------------------------


def test_arrears_age_open_amounts_by_days_past_due_and_subtract_partial_payments(landlord, theirs):
    lease = lease_with_charges(landlord=landlord, renter="Rita Late", rent_minor=100_000)
    bill(landlord)
    pay(invoices_of(lease)[date(2026, 11, 1)], 40_000)

    arrears = selectors.arrears_get(landlord=landlord, today=date(2026, 12, 5))

    row = row_for(arrears, "Rita Late")
    assert row.buckets == {
        "current": 100_000,  # Dec, due 12-06
        "d1_30": 60_000,  # Nov, due 11-06 (29 days), 400.00 paid
        "d31_60": 100_000,  # Oct, due 10-06 (60 days)
        "d61_90": 100_000,  # Sep, due 09-06 (90 days)
        "d90_plus": 100_000,  # Aug, due 08-06 (121 days)
    }
    assert row.total_minor == 460_000
    assert row.oldest_due == date(2026, 8, 6)
    assert row.currency == "EUR"
    assert row.invoices == 5


@pytest.mark.parametrize(
    ("today", "bucket"),
    [
        (date(2026, 12, 6), "current"),
        (date(2026, 12, 7), "d1_30"),
        (date(2027, 1, 5), "d1_30"),
        (date(2027, 1, 6), "d31_60"),
        (date(2027, 2, 4), "d31_60"),
        (date(2027, 2, 5), "d61_90"),
        (date(2027, 3, 6), "d61_90"),
        (date(2027, 3, 7), "d90_plus"),
    ],
)
def test_an_invoice_moves_buckets_on_the_day_its_age_crosses_a_boundary(
    landlord, theirs, today, bucket
):
    lease_with_charges(landlord=landlord, renter="Rita Late", rent_minor=100_000)
    bill(landlord, [date(2026, 12, 1)])

    (row,) = selectors.arrears_get(landlord=landlord, today=today).rows

    assert row.oldest_due == DEC_DUE
    assert {name: amount for name, amount in row.buckets.items() if amount} == {bucket: 100_000}


def test_paid_invoices_and_other_landlords_tenants_never_appear(landlord, theirs):
    paid = lease_with_charges(landlord=landlord, renter="Paula Paid", rent_minor=50_000)
    lease_with_charges(landlord=landlord, renter="Olga Owes", rent_minor=50_000)
    bill(landlord, [date(2026, 12, 1)])
    pay(invoices_of(paid)[date(2026, 12, 1)], 50_000)

    arrears = selectors.arrears_get(landlord=landlord, today=date(2027, 1, 1))

    assert [r.tenant_name for r in arrears.rows] == ["Olga Owes"]
    assert [(t.currency, t.tenants, t.total_minor) for t in arrears.totals] == [("EUR", 1, 50_000)]


def test_a_search_for_another_landlords_tenant_finds_nothing(landlord, theirs):
    lease_with_charges(landlord=landlord, renter="Olga Owes")
    bill(landlord, [date(2026, 12, 1)])

    found = selectors.arrears_get(landlord=landlord, today=date(2027, 1, 1), search="Bianca")

    assert found.rows == []
    assert found.totals == []


def test_search_matches_part_of_the_tenant_name(landlord, theirs):
    for name in ("Olga Owes", "Oskar Owes", "Rita Late"):
        lease_with_charges(landlord=landlord, renter=name)
    bill(landlord, [date(2026, 12, 1)])

    found = selectors.arrears_get(landlord=landlord, today=date(2027, 1, 1), search="owes")

    assert {r.tenant_name for r in found.rows} == {"Olga Owes", "Oskar Owes"}
    assert found.totals[0].tenants == 2


def _three_tenants(landlord):
    lease_with_charges(landlord=landlord, renter="Anna Big", rent_minor=300_000)
    lease_with_charges(landlord=landlord, renter="Carl Small", rent_minor=100_000)
    old = lease_with_charges(landlord=landlord, renter="Bert Old", rent_minor=200_000)
    bill(landlord, [date(2026, 12, 1)])
    invoice_services.billing_run_execute(
        landlord=landlord,
        period_start=date(2026, 11, 1),
        as_of=date(2026, 11, 28),
        started_by="t",
        on_schedule=True,
    )
    # Only Bert still owes November.
    for lease in Invoice.objects.filter(landlord=landlord, period_start=date(2026, 11, 1)):
        if lease.lease_id != old.pk:
            pay(lease, lease.total_minor)


@pytest.mark.parametrize(
    ("sort", "names"),
    [
        ("total", ["Bert Old", "Anna Big", "Carl Small"]),
        ("oldest", ["Bert Old", "Anna Big", "Carl Small"]),
        ("name", ["Anna Big", "Bert Old", "Carl Small"]),
        ("bogus", ["Bert Old", "Anna Big", "Carl Small"]),
    ],
)
def test_arrears_sort_by_total_oldest_due_or_name(landlord, theirs, sort, names):
    _three_tenants(landlord)

    arrears = selectors.arrears_get(landlord=landlord, today=date(2027, 1, 1), sort=sort)

    assert [r.tenant_name for r in arrears.rows] == names


def test_totals_per_currency_cover_every_page_not_just_the_shown_one(landlord, theirs):
    _three_tenants(landlord)
    usd_tenant = TenantFactory(landlord=landlord, full_name="Dora Dollar")
    usd_lease = LeaseFactory(
        unit=UnitFactory(property__landlord=landlord), tenants=[usd_tenant], currency="USD"
    )
    ChargeFactory(lease=usd_lease, amount_minor=70_000)
    bill(landlord, [date(2026, 10, 1)])  # Oct: everyone, USD included
    total_eur = sum(
        i.total_minor
        for i in Invoice.objects.filter(landlord=landlord, currency="EUR")
        if i.period_start != date(2026, 11, 1) or i.lease.tenants.get().full_name == "Bert Old"
    )

    first = selectors.arrears_get(landlord=landlord, today=date(2027, 1, 1), size=2)
    second = selectors.arrears_get(landlord=landlord, today=date(2027, 1, 1), size=2, page=2)

    assert len(first.rows) == 2 and len(second.rows) == 2
    assert first.page.paginator.count == 4  # 3 tenants in EUR, 1 in USD
    totals = {t.currency: t for t in first.totals}
    assert totals["EUR"].total_minor == total_eur
    assert totals["EUR"].tenants == 3
    assert totals["USD"].total_minor == 70_000
    assert sum(totals["EUR"].buckets.values()) == total_eur
    assert {r.tenant_name for r in first.rows + second.rows} == {
        "Anna Big",
        "Bert Old",
        "Carl Small",
        "Dora Dollar",
    }


def test_late_fee_invoices_count_as_arrears(landlord, theirs):
    lease = lease_with_charges(landlord=landlord, renter="Rita Late", rent_minor=100_000)
    bill(landlord, [date(2026, 12, 1)])
    rent = invoices_of(lease)[date(2026, 12, 1)]
    invoice_services.late_fee_invoice_issue(
        invoice=rent,
        amount_minor=2_500,
        description="Late fee",
        issue_date=date(2026, 12, 11),
    )

    (row,) = selectors.arrears_get(landlord=landlord, today=date(2026, 12, 20)).rows

    assert row.total_minor == 102_500
    assert row.invoices == 2


def test_credit_held_for_a_tenant_is_shown_next_to_what_they_owe(landlord, theirs):
    lease = lease_with_charges(landlord=landlord, renter="Rita Late", rent_minor=100_000)
    bill(landlord, [date(2026, 12, 1)])
    rent = invoices_of(lease)[date(2026, 12, 1)]
    pay(rent, 130_000)  # 300.00 too much: held as credit
    # A fee issued afterwards is open although credit is held.
    invoice_services.late_fee_invoice_issue(
        invoice=rent,
        amount_minor=2_500,
        description="Late fee",
        issue_date=date(2026, 12, 11),
    )

    (row,) = selectors.arrears_get(landlord=landlord, today=date(2026, 12, 20)).rows

    assert row.total_minor == 2_500
    assert row.credit_minor == 30_000


def test_arrears_take_a_constant_number_of_queries(landlord, theirs, django_assert_max_num_queries):
    for i in range(6):
        lease_with_charges(landlord=landlord, renter=f"Renter {i} Owes")
    bill(landlord, [date(2026, 11, 1), date(2026, 12, 1)])
    TenantDunning.objects.create(
        landlord=landlord,
        tenant=Invoice.objects.filter(landlord=landlord).first().tenant,
        paused=True,
        pause_reason="plan",
    )

    with django_assert_max_num_queries(10):
        arrears = selectors.arrears_get(landlord=landlord, today=date(2027, 1, 1))
        rows = [(r.tenant_name, r.next_step, r.paused, r.credit_minor) for r in arrears.rows]

    assert len(rows) == 6
    assert sum(paused for _n, _s, paused, _c in rows) == 1


# --- what happens next -------------------------------------------------------------------


def test_the_next_step_is_the_first_policy_step_not_yet_taken_on_the_oldest_invoice(
    landlord, theirs
):
    lease = lease_with_charges(landlord=landlord, renter="Rita Late")
    bill(landlord, [date(2026, 12, 1)])
    rent = invoices_of(lease)[date(2026, 12, 1)]

    (row,) = selectors.arrears_get(landlord=landlord, today=date(2026, 12, 2)).rows
    assert (row.next_step.action, row.next_step.day) == ("reminder", date(2026, 12, 3))
    assert row.next_step.invoice == rent

    DunningStep.objects.create(
        landlord=landlord,
        invoice=rent,
        tenant=rent.tenant,
        key="reminder-3",
        action="reminder",
        scheduled_on=date(2026, 12, 3),
        status=StepStatus.DONE,
    )
    (row,) = selectors.arrears_get(landlord=landlord, today=date(2026, 12, 4)).rows
    assert (row.next_step.action, row.next_step.day) == ("due_notice", DEC_DUE)


def test_a_step_whose_day_has_passed_is_shown_as_due_today(landlord, theirs):
    lease_with_charges(landlord=landlord, renter="Rita Late")
    bill(landlord, [date(2026, 12, 1)])

    (row,) = selectors.arrears_get(landlord=landlord, today=date(2026, 12, 10)).rows

    assert (row.next_step.action, row.next_step.day) == ("reminder", date(2026, 12, 10))


def test_the_next_step_follows_the_lease_assigned_policy(landlord, theirs):
    lease = lease_with_charges(landlord=landlord, renter="Rita Late")
    bill(landlord, [date(2026, 12, 1)])
    services.policy_default_get_or_create(landlord=landlord)
    gentle = services.policy_save(
        landlord=landlord,
        policy=None,
        name="Gentle",
        data=PolicyRules(steps=(StepRule(10, "overdue_notice", "email"),)),
    )
    services.policy_assign(landlord=landlord, lease=lease, policy=gentle)

    (row,) = selectors.arrears_get(landlord=landlord, today=date(2026, 12, 2)).rows

    assert (row.next_step.action, row.next_step.day) == ("overdue_notice", date(2026, 12, 16))


def test_when_every_step_was_taken_no_further_step_is_shown(landlord, theirs):
    lease = lease_with_charges(landlord=landlord, renter="Rita Late")
    bill(landlord, [date(2026, 12, 1)])
    services.policy_save(
        landlord=landlord,
        policy=None,
        name="Short",
        data=PolicyRules(steps=(StepRule(1, "overdue_notice", "email"),)),
        make_default=True,
    )
    rent = invoices_of(lease)[date(2026, 12, 1)]
    DunningStep.objects.create(
        landlord=landlord,
        invoice=rent,
        tenant=rent.tenant,
        key="overdue_notice+1",
        action="overdue_notice",
        scheduled_on=date(2026, 12, 7),
        status=StepStatus.DONE,
    )

    (row,) = selectors.arrears_get(landlord=landlord, today=date(2026, 12, 20)).rows

    assert row.next_step is None
    assert row.no_more_steps


def test_reading_the_next_step_creates_no_policy(landlord, theirs):
    lease_with_charges(landlord=landlord, renter="Rita Late")
    bill(landlord, [date(2026, 12, 1)])

    selectors.arrears_get(landlord=landlord, today=date(2026, 12, 2))

    assert not DunningPolicy.objects.filter(landlord=landlord).exists()


# --- timelines ---------------------------------------------------------------------------


@pytest.fixture
def dunned(landlord, theirs, other_landlord):
    """A's and B's December invoices after the engine's reminder tick (Dec 3, 09:00)."""
    lease = lease_with_charges(landlord=landlord, renter="Rita Late")
    bill(landlord, [date(2026, 12, 1)])
    now = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    services.dunning_tick(now=now, landlord=landlord)
    # B is in New York: 15:00 UTC is inside its sending window.
    services.dunning_tick(now=datetime(2026, 12, 3, 15, 0, tzinfo=UTC), landlord=other_landlord)
    return invoices_of(lease)[date(2026, 12, 1)]


def test_the_invoice_timeline_lists_its_steps_with_their_messages(landlord, dunned):
    (entry,) = selectors.invoice_timeline(landlord=landlord, invoice=dunned)

    assert entry.step.key == "reminder-3"
    assert [(n.channel, n.kind, n.to_address) for n in entry.notifications] == [
        ("email", "dunning_reminder", "rita@example.test")
    ]


def test_the_invoice_timeline_of_another_landlords_invoice_is_empty(
    landlord, other_landlord, dunned
):
    theirs = DunningStep.objects.filter(landlord=other_landlord).first().invoice

    assert selectors.invoice_timeline(landlord=landlord, invoice=theirs) == []


def test_a_late_fee_invoice_shows_the_step_that_charged_it_and_its_waiver(landlord, dunned):
    fee = invoice_services.late_fee_invoice_issue(
        invoice=dunned,
        amount_minor=2_500,
        description="Late fee",
        issue_date=date(2026, 12, 11),
    )
    DunningStep.objects.create(
        landlord=landlord,
        invoice=dunned,
        tenant=dunned.tenant,
        key="late_fee+5",
        action="late_fee",
        scheduled_on=date(2026, 12, 11),
        status=StepStatus.DONE,
        fee_invoice=fee,
    )
    services.late_fee_waive(landlord=landlord, fee_invoice=fee, reason="Goodwill")

    keys = [e.step.key for e in selectors.invoice_timeline(landlord=landlord, invoice=fee)]
    rent_keys = [e.step.key for e in selectors.invoice_timeline(landlord=landlord, invoice=dunned)]

    assert keys == ["late_fee+5", f"waive#{fee.pk}"]
    assert rent_keys[:2] == ["reminder-3", "late_fee+5"]
    assert f"waive#{fee.pk}" in rent_keys


def test_the_tenant_timeline_is_newest_first_and_shows_delivery_status(landlord, dunned):
    later = DunningStep.objects.create(
        landlord=landlord,
        invoice=dunned,
        tenant=dunned.tenant,
        key="due_notice+0",
        action="due_notice",
        channels="sms",
        scheduled_on=DEC_DUE,
        status=StepStatus.DONE,
    )
    NotificationFactory(
        tenant=dunned.tenant,
        invoice=dunned,
        kind="dunning_due_notice",
        channel="sms",
        dedupe_key=f"dunning:{later.pk}:sms",
        status="failed",
        last_error="Unreachable",
    )

    timeline = selectors.tenant_timeline(landlord=landlord, tenant=dunned.tenant)

    assert [e.step.key for e in timeline] == ["due_notice+0", "reminder-3"]
    assert [(n.channel, n.status) for n in timeline[0].notifications] == [("sms", "failed")]


def test_the_tenant_timeline_of_another_landlords_tenant_is_empty(landlord, other_landlord, dunned):
    theirs = DunningStep.objects.filter(landlord=other_landlord).first().tenant

    assert selectors.tenant_timeline(landlord=landlord, tenant=theirs) == []


# --- policies and templates --------------------------------------------------------------


def test_policy_list_shows_only_own_policies_default_first(landlord, other_landlord):
    services.policy_default_get_or_create(landlord=other_landlord)
    services.policy_default_get_or_create(landlord=landlord)
    services.policy_save(
        landlord=landlord,
        policy=None,
        name="Another",
        data=PolicyRules(steps=(StepRule(10, "overdue_notice", "email"),)),
    )

    policies = list(selectors.policy_list(landlord=landlord))

    assert [(p.name, p.is_default, p.step_count) for p in policies] == [
        ("Standard", True, 7),
        ("Another", False, 1),
    ]


def test_template_list_has_every_kind_in_english_and_german_marking_customised_ones(
    landlord, other_landlord
):
    services.template_save(
        landlord=other_landlord,
        kind="reminder",
        language="de",
        subject="B",
        body="B",
        sms="B",
    )
    services.template_save(
        landlord=landlord,
        kind="reminder",
        language="en",
        subject="Pay {{ amount_due }}",
        body="Hello {{ tenant_name }}",
        sms="Pay",
    )

    rows = selectors.template_list(landlord=landlord)

    assert len(rows) == 14
    assert {(r.kind, r.language) for r in rows if r.customised} == {("reminder", "en")}
    (custom,) = [r for r in rows if r.customised]
    assert custom.subject == "Pay {{ amount_due }}"
