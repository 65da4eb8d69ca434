"""The rent roll: every unit on a day with its tenants, the monthly charges in force and
what is owed on its lease's invoices (from the ledger), with totals, search, a property
filter, pagination and a CSV. Landlord B's units never appear."""

import csv
import io
from datetime import UTC, date, datetime

import pytest
from django.urls import reverse

from payments.services import manual_payment_record
from tenants.models import ChargeFrequency, ChargeKind
from tests.factories import (
    ChargeFactory,
    LeaseFactory,
    MembershipFactory,
    PropertyFactory,
    TenantFactory,
    UnitFactory,
)
from tests.invoices.factories import bill_december

URL = "dashboard:rent_roll"


@pytest.fixture(autouse=True)
def _today(time_machine):
    time_machine.move_to(datetime(2026, 12, 20, 11, tzinfo=UTC), tick=False)


@pytest.fixture
def roll(landlord, other_landlord):
    """Landlord A: Elm House with a let flat (rent + parking, one-off cleaning, a deposit,
    December billed and part paid), a flat whose lease ends on 10 December, a vacant
    flat; Oak Court with one let flat. Landlord B has leases of its own."""
    elm = PropertyFactory(landlord=landlord, name="Elm House")
    oak = PropertyFactory(landlord=landlord, name="Oak Court")
    ada = TenantFactory(landlord=landlord, full_name="Ada Lovelace")
    bob = TenantFactory(landlord=landlord, full_name="Bob Ended")
    cy = TenantFactory(landlord=landlord, full_name="Cy Oak")
    let = LeaseFactory(
        unit=UnitFactory(property=elm, name="1A"), tenants=[ada], deposit_minor=240_000
    )
    ChargeFactory(lease=let, amount_minor=120_000)
    ChargeFactory(lease=let, kind=ChargeKind.PARKING, amount_minor=8_000)
    ChargeFactory(
        lease=let,
        kind=ChargeKind.OTHER,
        amount_minor=5_000,
        frequency=ChargeFrequency.ONE_OFF,
        start_date=date(2026, 12, 5),
    )
    ending = LeaseFactory(
        unit=UnitFactory(property=elm, name="1B"), tenants=[bob], end_date=date(2026, 12, 11)
    )
    ChargeFactory(lease=ending, amount_minor=90_000)
    UnitFactory(property=elm, name="2A")
    oak_lease = LeaseFactory(unit=UnitFactory(property=oak, name="G1"), tenants=[cy])
    ChargeFactory(lease=oak_lease, amount_minor=70_000)
    bill_december(landlord=landlord)
    manual_payment_record(
        landlord=landlord,
        tenant=ada,
        amount_minor=100_000,
        currency="EUR",
        method="bank_transfer",
        reference="",
        received_on=date(2026, 12, 3),
        actor=None,
    )
    bill_december(landlord=other_landlord)
    return {"let": let, "ending": ending, "oak": oak_lease, "oak_property": oak}


@pytest.fixture
def staff(client, landlord):
    client.force_login(MembershipFactory(landlord=landlord, role="finance").user)
    return client


def rows_of(response):
    return {(r.unit.property.name, r.unit.name): r for r in response.context["rows"]}


def test_each_unit_with_its_lease_charges_and_what_is_owed(staff, roll):
    response = staff.get(reverse(URL))

    assert response.status_code == 200
    rows = rows_of(response)
    assert list(rows) == [
        ("Elm House", "1A"),
        ("Elm House", "1B"),
        ("Elm House", "2A"),
        ("Oak Court", "G1"),
    ]
    one_a = rows[("Elm House", "1A")]
    assert one_a.tenants == "Ada Lovelace"
    assert one_a.monthly_minor == 128_000  # the one-off is not a monthly charge
    # December billed 133,000.00 (rent, parking, cleaning); 1,000.00 paid.
    assert one_a.owed_minor == 133_000 - 100_000
    # 1B's lease ended on the 11th: on the 20th the unit is vacant.
    assert rows[("Elm House", "1B")].lease is None
    assert rows[("Elm House", "2A")].lease is None
    totals = response.context["totals"]
    assert (totals.units, totals.occupied) == (4, 2)
    assert totals.monthly == {"EUR": 128_000 + 70_000}
    # Bob's December (10 days) and Oak's December are owed too.
    assert totals.owed["EUR"] > one_a.owed_minor
    page = response.content.decode()
    assert "Brightside" not in page and "Ada Lovelace" in page


def test_a_past_day_shows_the_units_as_they_stood_then(staff, roll):
    rows = rows_of(staff.get(reverse(URL), {"day": "2026-12-05"}))

    assert rows[("Elm House", "1B")].tenants == "Bob Ended"
    # On the 5th December was billed and the payment of the 3rd was in; on 30
    # November nothing of December was billed yet.
    assert rows[("Elm House", "1A")].owed_minor == 33_000
    early = rows_of(staff.get(reverse(URL), {"day": "2026-11-30"}))
    assert early[("Elm House", "1A")].owed_minor == 0


def test_search_and_property_filter(staff, roll):
    assert list(rows_of(staff.get(reverse(URL), {"q": "lovelace"}))) == [("Elm House", "1A")]
    oak = rows_of(staff.get(reverse(URL), {"property": roll["oak_property"].pk}))
    assert list(oak) == [("Oak Court", "G1")]
    empty = staff.get(reverse(URL), {"q": "nobody"}).content.decode()
    assert "No unit matches" in empty


def test_bad_input_names_the_parameter(staff, roll):
    page = staff.get(reverse(URL), {"day": "2026-13-01"})
    assert page.status_code == 400
    assert "day" in page.content.decode()
    # A property of another landlord is not a choice here.
    other = PropertyFactory(landlord=LeaseFactory().landlord)
    assert staff.get(reverse(URL), {"property": other.pk}).status_code == 400
    csv_bad = staff.get(reverse("dashboard:rent_roll_csv"), {"property": "x"})
    assert csv_bad.status_code == 400 and b"property" in csv_bad.content


def test_the_csv_has_every_unit_for_finance_staff(staff, roll):
    response = staff.get(reverse("dashboard:rent_roll_csv"), {"day": "2026-12-20"})

    assert response.status_code == 200
    lines = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(r["property"], r["unit"], r["status"]) for r in lines] == [
        ("Elm House", "1A", "let"),
        ("Elm House", "1B", "vacant"),
        ("Elm House", "2A", "vacant"),
        ("Oak Court", "G1", "let"),
    ]
    assert (lines[0]["monthly_charges"], lines[0]["deposit"], lines[0]["owed"]) == (
        "1280.00",
        "2400.00",
        "330.00",
    )


def test_many_units_page_and_the_csv_walks_them_all(staff, landlord, roll, monkeypatch):
    from reports import selectors

    prop = PropertyFactory(landlord=landlord, name="Zeta Block")
    for n in range(60):
        LeaseFactory(unit=UnitFactory(property=prop, name=f"Z{n:03d}"))
    first = staff.get(reverse(URL))
    assert len(first.context["rows"]) < 64
    assert first.context["totals"].units == 64
    monkeypatch.setattr(selectors, "CHUNK", 7)  # several keyset chunks
    body = b"".join(staff.get(reverse("dashboard:rent_roll_csv")).streaming_content).decode()
    assert len(list(csv.DictReader(io.StringIO(body)))) == 64


def test_viewers_see_it_but_only_export_may_download(client, landlord, roll):
    client.force_login(MembershipFactory(landlord=landlord, role="viewer").user)
    assert client.get(reverse(URL)).status_code == 200
    assert client.get(reverse("dashboard:rent_roll_csv")).status_code == 403


def test_an_empty_landlord_gets_a_helpful_page(client, other_landlord):
    from tests.factories import LandlordFactory

    empty = LandlordFactory(slug="empty-co")
    client.force_login(MembershipFactory(landlord=empty, role="owner").user)
    assert "No units yet" in client.get(reverse(URL)).content.decode()
