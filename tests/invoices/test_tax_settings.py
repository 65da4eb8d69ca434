"""Invoice settings and tax rates per charge kind, entered as percentages."""

import pytest
from django.urls import reverse

from invoices import services
from invoices.forms import InvoiceSettingsForm
from invoices.models import InvoiceSettings, TaxRate
from ledger.models import AccountCode, LedgerEntry
from ledger.selectors import trial_balance
from tenants.models import AuditEvent
from tests.factories import MembershipFactory
from tests.invoices.factories import bill_december, lease_with_charges


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def form_data(**taxes):
    data = {"number_prefix": "INV", "send_emails": "on"}
    data.update({f"tax_{kind}": value for kind, value in taxes.items()})
    return data


def test_a_19_percent_rate_on_parking_gives_tax_lines_and_a_tax_payable_posting(
    staff_client, landlord
):
    response = staff_client.post(reverse("dashboard:invoice_settings"), form_data(parking="19"))
    assert response.status_code == 302
    assert TaxRate.objects.get(landlord=landlord, kind="parking").rate_bp == 1_900
    lease_with_charges(landlord=landlord, renter="Ada Tax", rent_minor=100_000, parking_minor=5_000)
    (invoice,) = bill_december(landlord=landlord)
    parking = invoice.lines.get(kind="parking")
    assert (parking.tax_rate_bp, parking.tax_minor) == (1_900, 950)
    assert invoice.lines.get(kind="rent").tax_minor == 0
    assert invoice.total_minor == 105_950
    tax_payable = LedgerEntry.objects.filter(
        transaction__document_id=invoice.pk, account__code=AccountCode.TAX_PAYABLE
    )
    assert [e.amount_minor for e in tax_payable] == [-950]
    assert trial_balance(landlord=landlord).totals == {"EUR": 0}


@pytest.mark.parametrize(
    ("entered", "error"),
    [("101", "more than 100"), ("-1", "negative"), ("7.125", "two decimals"), ("abc", "19")],
)
def test_bad_percentages_are_field_errors_and_change_nothing(
    staff_client, landlord, entered, error
):
    TaxRate.objects.create(landlord=landlord, kind="parking", rate_bp=700)
    response = staff_client.post(
        reverse("dashboard:invoice_settings"),
        {**form_data(parking=entered), "number_prefix": "NEW", "review_drafts": "on"},
    )
    assert response.status_code == 200
    assert error in " ".join(response.context["form"].errors["tax_parking"])
    assert TaxRate.objects.get(landlord=landlord, kind="parking").rate_bp == 700
    assert not InvoiceSettings.objects.filter(landlord=landlord, number_prefix="NEW").exists()


def test_percentages_convert_to_basis_points():
    form = InvoiceSettingsForm(form_data(parking="7.5", rent="", pet="19,25", storage="100"))
    assert form.is_valid(), form.errors
    rates = form.cleaned_data["tax_rates_bp"]
    assert (rates["parking"], rates["rent"], rates["pet"], rates["storage"]) == (
        750,
        None,
        1925,
        10_000,
    )


def test_settings_update_replaces_and_removes_rates_with_an_audit(landlord, other_landlord):
    TaxRate.objects.create(landlord=other_landlord, kind="parking", rate_bp=500)
    TaxRate.objects.create(landlord=landlord, kind="pet", rate_bp=500)
    services.invoice_settings_update(
        landlord=landlord,
        actor=None,
        number_prefix="RL",
        review_drafts=True,
        send_emails=False,
        tax_rates_bp={"parking": 1_900, "pet": None},
    )
    assert dict(TaxRate.objects.filter(landlord=landlord).values_list("kind", "rate_bp")) == {
        "parking": 1_900
    }
    assert TaxRate.objects.get(landlord=other_landlord).rate_bp == 500
    row = InvoiceSettings.objects.get(landlord=landlord)
    assert (row.number_prefix, row.review_drafts, row.send_emails) == ("RL", True, False)
    assert AuditEvent.objects.filter(landlord=landlord, action="invoice_settings.update").exists()


def test_the_settings_page_shows_the_current_rates(staff_client, landlord):
    TaxRate.objects.create(landlord=landlord, kind="parking", rate_bp=750)
    page = staff_client.get(reverse("dashboard:invoice_settings"))
    assert page.context["form"].initial["tax_parking"] == "7.5"


def test_a_manager_cannot_change_invoice_settings(client, landlord):
    client.force_login(MembershipFactory(landlord=landlord, role="manager").user)
    response = client.post(reverse("dashboard:invoice_settings"), form_data(parking="19"))
    assert response.status_code == 403
    assert not TaxRate.objects.filter(landlord=landlord).exists()
