"""Draft review: a run with review_drafts stops at unnumbered drafts; issuing them
numbers, posts and emails them once."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from invoices import services
from invoices.models import (
    BillingRun,
    BillingRunStatus,
    Invoice,
    InvoiceSettings,
    InvoiceState,
    Notification,
)
from ledger.models import LedgerTransaction
from ledger.selectors import ledger_verify, trial_balance
from tests.factories import MembershipFactory
from tests.invoices.factories import bill_december, lease_with_charges


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def reviewed_run(landlord, other_landlord):
    InvoiceSettings.objects.create(landlord=landlord, review_drafts=True)
    for i in range(3):
        lease_with_charges(landlord=landlord, renter=f"Renter{i} Test", parking_minor=5_000)
    lease_with_charges(landlord=other_landlord, renter="Other Renter")
    bill_december(landlord=other_landlord)
    bill_december(landlord=landlord)
    return BillingRun.objects.get(landlord=landlord)


def test_a_review_run_stops_at_unnumbered_drafts_without_postings(landlord, reviewed_run):
    assert reviewed_run.status == BillingRunStatus.REVIEW
    drafts = Invoice.objects.filter(landlord=landlord)
    assert drafts.count() == 3
    assert set(drafts.values_list("state", "number")) == {(InvoiceState.DRAFT, None)}
    assert not LedgerTransaction.objects.filter(landlord=landlord).exists()
    assert not Notification.objects.filter(landlord=landlord).exists()


def test_issuing_numbers_the_drafts_gaplessly_posts_and_emails_each(landlord, reviewed_run):
    issued = services.billing_run_issue(run=reviewed_run, actor=None)
    assert issued == 3
    invoices = Invoice.objects.filter(landlord=landlord).order_by("pk")
    assert {i.state for i in invoices} == {InvoiceState.ISSUED}
    assert [i.number for i in invoices] == [f"INV-2026-{n:06d}" for n in (1, 2, 3)]
    assert LedgerTransaction.objects.filter(landlord=landlord).count() == 3
    assert trial_balance(landlord=landlord).totals == {"EUR": 0}
    assert ledger_verify(landlord=landlord).ok
    assert Notification.objects.filter(landlord=landlord, kind="invoice_issued").count() == 3
    reviewed_run.refresh_from_db()
    assert reviewed_run.status == BillingRunStatus.COMPLETED


def test_issuing_twice_is_refused_and_changes_nothing(landlord, reviewed_run):
    services.billing_run_issue(run=reviewed_run, actor=None)
    with pytest.raises(ValidationError, match="not waiting for review"):
        services.billing_run_issue(run=reviewed_run, actor=None)
    assert LedgerTransaction.objects.filter(landlord=landlord).count() == 3
    assert Notification.objects.filter(landlord=landlord).count() == 3


def test_discarded_drafts_are_billed_again_by_the_next_start(landlord, reviewed_run):
    assert services.billing_run_discard_drafts(run=reviewed_run, actor=None) == 3
    assert not Invoice.objects.filter(landlord=landlord).exists()
    InvoiceSettings.objects.filter(landlord=landlord).update(review_drafts=False)
    invoices = bill_december(landlord=landlord)
    assert [i.number for i in invoices] == [f"INV-2026-{n:06d}" for n in (1, 2, 3)]
    reviewed_run.refresh_from_db()
    assert (reviewed_run.status, reviewed_run.invoices_created) == ("completed", 3)


def test_the_run_page_offers_to_issue_the_drafts(staff_client, reviewed_run):
    page = staff_client.get(reverse("dashboard:billingrun_detail", args=[reviewed_run.pk]))
    assert b"Issue 3 invoices" in page.content


def test_issuing_from_the_confirmation_page(landlord, staff_client, reviewed_run):
    url = reverse("dashboard:billingrun_issue", args=[reviewed_run.pk])
    confirm = staff_client.get(url)
    assert confirm.status_code == 200 and b"Issue 3 invoices" in confirm.content
    response = staff_client.post(url)
    assert response.status_code == 302
    assert not Invoice.objects.filter(landlord=landlord, state=InvoiceState.DRAFT).exists()


def test_another_landlords_run_cannot_be_issued(staff_client, other_landlord):
    InvoiceSettings.objects.create(landlord=other_landlord, review_drafts=True)
    lease_with_charges(landlord=other_landlord, renter="Other Renter")
    bill_december(landlord=other_landlord)
    run = BillingRun.objects.get(landlord=other_landlord)
    assert (
        staff_client.post(reverse("dashboard:billingrun_issue", args=[run.pk])).status_code == 404
    )


def test_a_viewer_cannot_issue_the_drafts(client, landlord, reviewed_run):
    client.force_login(MembershipFactory(landlord=landlord, role="viewer").user)
    assert (
        client.post(reverse("dashboard:billingrun_issue", args=[reviewed_run.pk])).status_code
        == 403
    )
    assert Invoice.objects.filter(landlord=landlord, state=InvoiceState.DRAFT).count() == 3
