"""The ledger check: recomputing each landlord's chain (nightly and on demand), keeping
what it found once per local day, and showing it where staff look. Landlord B's books
are always there and must neither be checked as A's nor hide A's break."""

import logging
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from ledger import services
from ledger.models import LedgerCheck
from ledger.tasks import ledger_checks_run
from tests.factories import MembershipFactory
from tests.ledger.factories import post_charge, post_payment
from tests.ledger.test_verify import tamper, txn

pytestmark = pytest.mark.django_db

NIGHT = datetime(2026, 12, 4, 1, 40, tzinfo=UTC)  # 02:40 in Berlin


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def posted(books, other_books):
    post_charge(books, 1_000, key="c1", invoice_id=1)
    post_charge(books, 2_000, key="c2", invoice_id=2)
    post_payment(books, 500, key="p1", invoice_id=1)
    return books


def break_second(books) -> None:
    entry = txn(books.landlord, 2).entries.order_by("pk").first()
    tamper("UPDATE ledger_ledgerentry SET amount_minor = amount_minor + 1 WHERE id = %s", entry.pk)


def test_an_intact_ledger_is_recorded_as_intact(posted):
    check = services.ledger_check_record(landlord=posted.landlord, now=NIGHT)
    assert (check.ok, check.problem, check.transactions_checked, check.last_seq) == (
        True,
        "",
        3,
        3,
    )
    assert check.last_hash == txn(posted.landlord, 3).hash
    assert check.day.isoformat() == "2026-12-04"


def test_a_tampered_entry_is_recorded_and_logged_as_an_error(posted, caplog):
    break_second(posted)
    with caplog.at_level(logging.ERROR, logger="ledger.services"):
        check = services.ledger_check_record(landlord=posted.landlord, now=NIGHT)
    assert not check.ok
    assert check.problem.startswith("Transaction #2: ")
    assert "do not balance" in check.problem
    assert any("Ledger check failed for landlord acme" in r.message for r in caplog.records)


def test_checking_twice_a_day_keeps_one_row_with_the_later_outcome(posted):
    services.ledger_check_record(landlord=posted.landlord, now=NIGHT)
    break_second(posted)
    later = services.ledger_check_record(landlord=posted.landlord, now=NIGHT.replace(hour=15))
    rows = LedgerCheck.objects.filter(landlord=posted.landlord)
    assert list(rows.values_list("pk", "ok")) == [(later.pk, False)]
    # The next local day (Berlin) is a row of its own.
    services.ledger_check_record(landlord=posted.landlord, now=NIGHT.replace(hour=23))
    assert rows.count() == 2


def test_the_nightly_task_checks_every_landlord_and_counts_the_broken(posted, other_books):
    break_second(posted)
    assert ledger_checks_run.delay().get() == 1
    outcome = dict(LedgerCheck.objects.values_list("landlord__slug", "ok"))
    assert outcome == {"acme": False, "brightside": True}


def test_the_ledger_page_shows_the_last_check_and_a_break_prominently(client, posted, other_books):
    client.force_login(MembershipFactory(landlord=posted.landlord, role="finance").user)
    page = client.get(reverse("dashboard:ledger"), {"as_of": "2026-12-31"}).content.decode()
    assert "Not checked yet" in page and "Check the chain now" in page

    response = client.post(reverse("dashboard:ledger"), follow=True)
    body = response.content.decode()
    assert "The ledger verified: 3 transactions, chain intact through #3." in body
    assert "Intact" in body

    break_second(posted)
    services.ledger_check_record(landlord=other_books.landlord, now=NIGHT)  # B stays intact
    body = client.post(reverse("dashboard:ledger"), follow=True).content.decode()
    assert "The ledger did not verify. Transaction #2" in body
    assert "The last check found the ledger changed outside Rentledger" in body
    assert 'role="alert"' in body


def test_a_viewer_sees_the_check_but_cannot_run_one(client, posted):
    services.ledger_check_record(landlord=posted.landlord, now=NIGHT)
    client.force_login(MembershipFactory(landlord=posted.landlord, role="viewer").user)
    page = client.get(reverse("dashboard:ledger")).content.decode()
    assert "Intact" in page and "Check the chain now" not in page
    assert client.post(reverse("dashboard:ledger")).status_code == 403
    assert LedgerCheck.objects.count() == 1
