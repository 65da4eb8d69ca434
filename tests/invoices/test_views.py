"""Staff billing pages: runs, invoices, void, PDF, statements. Landlord B always has
look-alike invoices and runs, so a page that forgets its scope shows them."""

import csv
import io
import sys
import types
from datetime import date

import pytest
from django.urls import reverse
from django.utils import timezone

from invoices import selectors, services
from invoices.models import BillingRun, Invoice, InvoiceState
from tenants.models import AuditEvent, Lease
from tests.factories import ChargeFactory, LeaseFactory, MembershipFactory, TenantFactory
from tests.invoices.test_selectors import pay

DEC = date(2026, 12, 1)


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def bill(landlord, *, period=DEC, as_of=date(2026, 12, 31)):
    return services.billing_run_execute(
        landlord=landlord, period_start=period, as_of=as_of, started_by="test", on_schedule=True
    )


def portfolio(landlord, count: int, *, prefix: str) -> list[Invoice]:
    for i in range(count):
        renter = TenantFactory(landlord=landlord, full_name=f"{prefix} Renter {i}")
        lease = LeaseFactory(
            unit__property__landlord=landlord,
            unit__property__name=f"{prefix} House {i}",
            tenants=[renter],
            billing_day=1 + i % 3,
        )
        ChargeFactory(lease=lease)
    bill(landlord)
    return list(Invoice.objects.filter(landlord=landlord).order_by("pk"))


@pytest.fixture
def theirs(other_landlord):
    for lease in Lease.objects.filter(landlord=other_landlord):
        ChargeFactory(lease=lease)
    return portfolio(other_landlord, 3, prefix="Brightside")


@pytest.fixture
def mine(landlord, theirs):
    return portfolio(landlord, 4, prefix="Acme")


@pytest.fixture
def viewer_client(client, landlord, other_landlord):
    client.force_login(MembershipFactory(landlord=landlord, role="viewer").user)
    return client


def url(name, *args):
    return reverse(f"dashboard:{name}", args=args)


def listed(response) -> list[int]:
    return [row.invoice.pk for row in response.context["page"].rows]


# --- invoice list -------------------------------------------------------------------


def test_the_invoice_list_shows_the_landlords_invoices_with_their_status(staff_client, mine):
    response = staff_client.get(url("invoice_list"))
    assert response.status_code == 200
    assert sorted(listed(response)) == sorted(i.pk for i in mine)
    body = response.content.decode()
    assert "Acme Renter 0" in body and "Brightside" not in body
    assert 'class="badge' in body


def test_the_invoice_list_filters_by_status_period_property_and_tenant(staff_client, mine):
    paid, part = mine[0], mine[1]
    pay(paid, paid.total_minor)
    pay(part, 100)
    get = staff_client.get
    assert listed(get(url("invoice_list"), {"status": "paid"})) == [paid.pk]
    assert listed(get(url("invoice_list"), {"status": "partially_paid"})) == [part.pk]
    assert len(listed(get(url("invoice_list"), {"period": "2026-12"}))) == 4
    assert listed(get(url("invoice_list"), {"period": "2027-01"})) == []
    prop = mine[2].lease.unit.property_id
    assert listed(get(url("invoice_list"), {"property": prop})) == [mine[2].pk]
    assert listed(get(url("invoice_list"), {"tenant": mine[3].tenant_id})) == [mine[3].pk]


def test_the_invoice_list_searches_by_number(staff_client, mine):
    response = staff_client.get(url("invoice_list"), {"q": mine[2].number})
    assert listed(response) == [mine[2].pk]
    assert (
        "No invoice matches" in staff_client.get(url("invoice_list"), {"q": "ZZZ"}).content.decode()
    )


def test_bad_filter_values_are_ignored(staff_client, mine):
    response = staff_client.get(
        url("invoice_list"),
        {"status": "bogus", "period": "12/2026", "property": "x", "after": "garbage"},
    )
    assert response.status_code == 200
    assert len(listed(response)) == 4


def test_older_and_newer_links_walk_every_invoice_once(staff_client, landlord, theirs):
    invoices = portfolio(landlord, 60, prefix="Acme")
    seen, response = [], staff_client.get(url("invoice_list"), {"period": "2026-12"})
    while True:
        seen += listed(response)
        older = response.context["page"].older
        if not older:
            break
        assert "Older" in response.content.decode()
        response = staff_client.get(url("invoice_list"), {"period": "2026-12", "after": older})
    assert sorted(seen) == sorted(i.pk for i in invoices)
    assert len(seen) == len(set(seen)) == 60
    newer = response.context["page"].newer
    back = staff_client.get(url("invoice_list"), {"period": "2026-12", "before": newer})
    assert listed(back) == seen[25:50]
    assert f"period=2026-12&amp;before={newer}" in response.content.decode()


def test_the_invoice_list_takes_a_fixed_number_of_queries(
    staff_client, landlord, theirs, django_assert_max_num_queries
):
    portfolio(landlord, 40, prefix="Acme")
    pay(Invoice.objects.filter(landlord=landlord).first(), 100)
    # Session, user, memberships; page; balances; property filter options.
    for params in ({}, {"status": "overdue"}, {"status": "partially_paid", "period": "2026-12"}):
        with django_assert_max_num_queries(6):
            response = staff_client.get(url("invoice_list"), params)
        assert response.status_code == 200


def _csv_rows(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(body)))


def test_the_invoice_register_csv_has_the_filtered_invoices_with_status_and_balance(
    client, landlord, mine
):
    paid, part = mine[0], mine[1]
    pay(paid, paid.total_minor)
    pay(part, 100)
    finance = client
    finance.force_login(MembershipFactory(landlord=landlord, role="finance").user)
    page = finance.get(url("invoice_list"), {"period": "2026-12"}).content.decode()
    assert f'href="{url("invoice_list_csv")}?period=2026-12"' in page

    rows = _csv_rows(finance.get(url("invoice_list_csv"), {"period": "2026-12"}))
    assert sorted(int(r["invoice_id"]) for r in rows) == sorted(i.pk for i in mine)
    by_id = {int(r["invoice_id"]): r for r in rows}
    assert by_id[paid.pk]["status"] == "paid" and by_id[paid.pk]["balance"] == "0.00"
    owed = part.total_minor - 100
    assert by_id[part.pk]["status"] == "partially_paid"
    assert by_id[part.pk]["balance"] == f"{owed // 100}.{owed % 100:02d}"
    first = by_id[mine[2].pk]
    assert (first["number"], first["period_from"], first["period_to"]) == (
        mine[2].number,
        "2026-12-01",
        "2026-12-31",
    )
    assert first["bill_to"] == "Acme Renter 2" and first["property"] == "Acme House 2"
    assert not any("Brightside" in value for r in rows for value in r.values())
    only = _csv_rows(finance.get(url("invoice_list_csv"), {"status": "paid"}))
    assert [int(r["invoice_id"]) for r in only] == [paid.pk]


def test_the_invoice_register_reads_every_invoice_from_one_snapshot(landlord, theirs):
    invoices = portfolio(landlord, 7, prefix="Acme")
    oldest = min(invoices, key=lambda i: (i.issue_date, i.pk))
    rows = selectors.invoice_rows_every(
        landlord=landlord, filters=selectors.InvoiceFilters(), today=date(2026, 12, 31), chunk=3
    )
    first = next(rows)
    # A payment posts while the download is under way (after the first chunk of rows):
    # the register still shows every invoice as of the moment it started.
    pay(oldest, oldest.total_minor)
    rows = [first, *rows]

    assert sorted(r.invoice.pk for r in rows) == sorted(i.pk for i in invoices)
    assert len(rows) == len({r.invoice.pk for r in rows})
    (last,) = [r for r in rows if r.invoice.pk == oldest.pk]
    assert (last.balance_minor, last.status) == (oldest.total_minor, "overdue")
    # A new read sees the payment.
    again = selectors.invoice_rows_every(
        landlord=landlord, filters=selectors.InvoiceFilters(), today=date(2026, 12, 31)
    )
    assert {r.invoice.pk: r.status for r in again}[oldest.pk] == "paid"


def test_an_export_with_a_bad_filter_is_a_400_naming_each_one(staff_client, mine):
    response = staff_client.get(
        url("invoice_list_csv"), {"status": "bogus", "period": "2026-13", "tenant": "²"}
    )
    assert response.status_code == 400
    assert response.content.decode().splitlines() == [
        "status: Choose one of draft, open, overdue, paid, partially_paid, void.",
        "tenant: Enter a whole number.",
        "period: Enter a month as YYYY-MM, e.g. 2026-12.",
    ]
    # An id that names nothing exports nothing (it does not mean "any").
    nothing = _csv_rows(staff_client.get(url("invoice_list_csv"), {"tenant": "0"}))
    assert nothing == []
    # The list page itself ignores what it cannot use, non-ASCII digits included.
    page = staff_client.get(url("invoice_list"), {"tenant": "²", "property": "٣"})
    assert page.status_code == 200 and len(listed(page)) == 4


def test_a_viewer_cannot_download_the_invoice_register(viewer_client, mine):
    assert viewer_client.get(url("invoice_list_csv")).status_code == 403
    assert "Download CSV" not in viewer_client.get(url("invoice_list")).content.decode()


def test_the_empty_invoice_list_explains_where_invoices_come_from(staff_client, theirs):
    body = staff_client.get(url("invoice_list")).content.decode()
    assert "No invoices yet" in body and "Brightside" not in body


# --- invoice detail, PDF, void ------------------------------------------------------


def test_the_invoice_page_shows_lines_status_ledger_and_notifications(staff_client, mine):
    invoice = mine[0]
    pay(invoice, 1_000)
    response = staff_client.get(url("invoice_detail", invoice.pk))
    body = response.content.decode()
    assert response.context["status"] == "partially_paid"
    assert response.context["balance"] == invoice.total_minor - 1_000
    assert invoice.number in body and "Rent" in body
    # The issue posting and the payment allocated to the invoice (its own document).
    assert [t.description for t in response.context["transactions"]] == [
        f"Invoice {invoice.number}",
        f"Payment for {invoice.number}",
    ]
    assert "Cr receivable €10.00" in body
    assert "invoice_issued" in body  # the queued email


def test_download_pdf_returns_the_pdf_as_an_attachment(staff_client, mine, monkeypatch):
    calls = []

    def fake_pdf(*, invoice):
        calls.append(invoice.pk)
        return b"%PDF-1.7 fake"

    monkeypatch.setitem(sys.modules, "invoices.pdf", types.SimpleNamespace(invoice_pdf=fake_pdf))
    invoice = mine[0]
    response = staff_client.get(url("invoice_pdf", invoice.pk))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == f'attachment; filename="{invoice.number}.pdf"'
    assert response.content == b"%PDF-1.7 fake" and calls == [invoice.pk]


def test_voiding_requires_a_reason(staff_client, mine):
    invoice = mine[0]
    page = staff_client.get(url("invoice_void", invoice.pk))
    assert "reversed in the ledger" in page.content.decode()
    response = staff_client.post(url("invoice_void", invoice.pk), {"reason": "  "})
    assert response.status_code == 200
    assert "Say why the invoice is voided." in response.content.decode()
    invoice.refresh_from_db()
    assert invoice.state == InvoiceState.ISSUED


def test_voiding_marks_the_invoice_void_and_voiding_again_shows_an_error(staff_client, mine):
    invoice = mine[0]
    response = staff_client.post(url("invoice_void", invoice.pk), {"reason": "Wrong tenant"})
    assert response.status_code == 302
    invoice.refresh_from_db()
    assert (invoice.state, invoice.void_reason) == (InvoiceState.VOID, "Wrong tenant")
    detail = staff_client.get(url("invoice_detail", invoice.pk))
    assert detail.context["status"] == "void" and len(detail.context["transactions"]) == 2

    again = staff_client.post(url("invoice_void", invoice.pk), {"reason": "Twice"})
    assert again.status_code == 200
    assert f"Invoice {invoice.number} is already void." in again.content.decode()
    assert "already void" in staff_client.get(url("invoice_void", invoice.pk)).content.decode()


# --- billing runs -------------------------------------------------------------------


def test_the_run_list_and_page_show_counts_progress_issues_and_invoices(
    staff_client, landlord, mine
):
    bare = LeaseFactory(unit__property__landlord=landlord)  # no charges: an error
    run = bill(landlord)
    listing = staff_client.get(url("billingrun_list")).content.decode()
    assert "December 2026" in listing and "progressbar" in listing
    response = staff_client.get(url("billingrun_detail", run.pk))
    body = response.content.decode()
    assert response.context["object"].percent == 100
    assert url("lease_detail", bare.pk) in body and "no charges" in body
    assert {r.invoice.pk for r in response.context["invoices"].rows} == {i.pk for i in mine}
    assert "<script>" not in body  # finished: nothing to poll


def test_the_progress_endpoint_reports_the_counters(staff_client, landlord, mine):
    run = BillingRun.objects.get(landlord=landlord)
    data = staff_client.get(url("billingrun_progress", run.pk)).json()
    assert data["status"] == "completed"
    assert (data["leases_due"], data["invoices_created"], data["percent"]) == (4, 4, 100)


def test_a_running_run_polls_its_progress(staff_client, landlord, theirs):
    ChargeFactory(lease__unit__property__landlord=landlord)
    run, _chunks = services.billing_run_start(landlord=landlord, period_start=DEC, as_of=DEC)
    body = staff_client.get(url("billingrun_detail", run.pk)).content.decode()
    assert "<script>" in body and url("billingrun_progress", run.pk) in body
    assert staff_client.get(url("billingrun_progress", run.pk)).json()["percent"] == 0


def test_run_billing_now_confirms_then_starts_the_run(
    staff_client, landlord, theirs, settings, django_capture_on_commit_callbacks
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    # "Now" is the real clock in the landlord's time zone: bill the current month.
    month = timezone.now().astimezone(landlord.tz).date().replace(day=1)
    for _ in range(3):
        ChargeFactory(lease__unit__property__landlord=landlord, lease__start_date=date(2020, 1, 1))
    confirm = staff_client.get(url("billingrun_start"), {"month": f"{month:%Y-%m}"})
    assert confirm.context["preview"].leases_due == 3
    assert "Bill 3 leases now" in confirm.content.decode()
    assert not BillingRun.objects.filter(landlord=landlord).exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(url("billingrun_start"), {"month": f"{month:%Y-%m}"})
    run = BillingRun.objects.get(landlord=landlord)
    assert run.period_start == month
    assert response.status_code == 302 and response.url == url("billingrun_detail", run.pk)
    run.refresh_from_db()
    assert (run.status, run.invoices_created) == ("completed", 3)
    assert Invoice.objects.filter(landlord=landlord).count() == 3
    again = staff_client.get(url("billingrun_start"), {"month": f"{month:%Y-%m}"})
    assert "Nothing to bill" in again.content.decode()


def this_month(landlord) -> date:
    return timezone.now().astimezone(landlord.tz).date().replace(day=1)


def add_due_leases(landlord, count: int) -> None:
    for _ in range(count):
        ChargeFactory(lease__unit__property__landlord=landlord, lease__start_date=date(2020, 1, 1))


def bill_on_schedule(landlord) -> BillingRun:
    """The month's run as the beat tick would have started it, before staff look."""
    return services.billing_run_execute(
        landlord=landlord,
        period_start=this_month(landlord),
        as_of=timezone.now().astimezone(landlord.tz).date(),
        started_by="schedule",
    )


def test_run_billing_now_logs_the_staff_member_who_started_the_run(
    staff_client, owner, landlord, theirs, django_capture_on_commit_callbacks
):
    add_due_leases(landlord, 2)

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(url("billingrun_start"), {"month": f"{this_month(landlord):%Y-%m}"})

    run = BillingRun.objects.get(landlord=landlord)
    assert run.started_by == owner.email
    event = AuditEvent.objects.get(landlord=landlord, action="billing_run.start")
    assert (event.actor, event.object_id) == (owner, str(run.pk))


def test_running_billing_again_on_a_scheduled_run_names_the_staff_member(
    staff_client, owner, landlord, other_landlord, theirs, django_capture_on_commit_callbacks
):
    add_due_leases(landlord, 1)
    scheduled = bill_on_schedule(landlord)
    add_due_leases(landlord, 2)

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            url("billingrun_start"), {"month": f"{this_month(landlord):%Y-%m}"}, follow=True
        )

    assert f"by {owner.email}" in response.content.decode()
    run = BillingRun.objects.get(landlord=landlord)
    assert (run.pk, run.invoices_created, run.started_by) == (scheduled.pk, 3, owner.email)
    event = AuditEvent.objects.get(landlord=landlord, action="billing_run.resume")
    assert (event.actor, event.object_id) == (owner, str(run.pk))
    assert "2 leases to bill" in event.summary and "by schedule" in event.summary
    assert BillingRun.objects.get(landlord=other_landlord).started_by == "test"


def test_running_billing_again_with_nothing_to_bill_is_logged_and_keeps_the_runs_starter(
    staff_client, owner, landlord, theirs, django_capture_on_commit_callbacks
):
    add_due_leases(landlord, 1)
    bill_on_schedule(landlord)

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(url("billingrun_start"), {"month": f"{this_month(landlord):%Y-%m}"})

    assert BillingRun.objects.get(landlord=landlord).started_by == "schedule"
    event = AuditEvent.objects.get(landlord=landlord, action="billing_run.resume")
    assert event.actor == owner
    assert "0 leases to bill" in event.summary


def test_a_run_restart_whose_activity_log_entry_fails_is_rolled_back(
    staff_client, landlord, theirs, monkeypatch
):
    add_due_leases(landlord, 1)
    bill_on_schedule(landlord)
    add_due_leases(landlord, 1)

    def audit_fails(**kwargs):
        raise RuntimeError("audit failed")

    monkeypatch.setattr(services, "audit", audit_fails)
    with pytest.raises(RuntimeError, match="audit failed"):
        staff_client.post(url("billingrun_start"), {"month": f"{this_month(landlord):%Y-%m}"})

    run = BillingRun.objects.get(landlord=landlord)
    assert (run.started_by, run.leases_due, run.status) == ("schedule", 1, "completed")


def test_run_billing_now_refuses_a_bad_month(staff_client, theirs):
    response = staff_client.post(url("billingrun_start"), {"month": "December"})
    assert response.status_code == 200
    assert "Enter a month as YYYY-MM" in response.content.decode()
    assert not BillingRun.objects.filter(landlord=response.wsgi_request.landlord).exists()


# --- permissions and scope ----------------------------------------------------------


def test_a_viewer_can_look_but_cannot_start_a_run_or_void(viewer_client, landlord, mine):
    invoice = mine[0]
    run = BillingRun.objects.get(landlord=landlord)
    for name, args in (
        ("invoice_list", ()),
        ("invoice_detail", (invoice.pk,)),
        ("billingrun_list", ()),
        ("billingrun_detail", (run.pk,)),
        ("tenant_statement", (invoice.tenant_id,)),
    ):
        assert viewer_client.get(url(name, *args)).status_code == 200, name
    assert viewer_client.get(url("billingrun_start")).status_code == 403
    assert viewer_client.post(url("billingrun_start"), {"month": "2027-01"}).status_code == 403
    assert viewer_client.get(url("invoice_void", invoice.pk)).status_code == 403
    assert viewer_client.post(url("invoice_void", invoice.pk), {"reason": "x"}).status_code == 403
    invoice.refresh_from_db()
    assert invoice.state == InvoiceState.ISSUED
    assert BillingRun.objects.filter(landlord=landlord).count() == 1
    body = viewer_client.get(url("invoice_detail", invoice.pk)).content.decode()
    assert "Void…" not in body


def test_another_landlords_ids_are_404_everywhere(staff_client, mine, theirs, other_landlord):
    invoice = theirs[0]
    run = BillingRun.objects.get(landlord=other_landlord)
    for name, pk in (
        ("invoice_detail", invoice.pk),
        ("invoice_pdf", invoice.pk),
        ("invoice_void", invoice.pk),
        ("billingrun_detail", run.pk),
        ("billingrun_progress", run.pk),
        ("tenant_statement", invoice.tenant_id),
    ):
        assert staff_client.get(url(name, pk)).status_code == 404, name
    assert staff_client.post(url("invoice_void", invoice.pk), {"reason": "x"}).status_code == 404
    invoice.refresh_from_db()
    assert invoice.state == InvoiceState.ISSUED


def test_anonymous_users_are_sent_to_log_in(client, mine):
    response = client.get(url("invoice_list"))
    assert response.status_code == 302 and reverse("login") in response.url


# --- tenant statement ---------------------------------------------------------------


def test_the_statement_shows_entries_with_a_running_balance(staff_client, mine):
    invoice = mine[0]
    pay(invoice, 30_000)
    response = staff_client.get(url("tenant_statement", invoice.tenant_id))
    entries = list(response.context["page"].object_list)
    assert [e.running_balance for e in entries] == [
        invoice.total_minor,
        invoice.total_minor - 30_000,
    ]
    assert response.context["balances"] == {"EUR": invoice.total_minor - 30_000}
    body = response.content.decode()
    assert url("invoice_detail", invoice.pk) in body and "owed by the tenant" in body
    # Dated in the landlord's time zone: issued at local midnight, not the UTC day before.
    assert f'<td data-label="Date" class="nowrap">{invoice.issue_date:%Y-%m-%d}</td>' in body


def test_the_tenant_page_links_to_the_statement(staff_client, mine):
    tenant_id = mine[0].tenant_id
    body = staff_client.get(url("tenant_detail", tenant_id)).content.decode()
    assert url("tenant_statement", tenant_id) in body
