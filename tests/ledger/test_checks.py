"""The ledger check: recomputing each landlord's chain (nightly and on demand), keeping
what it found once per local day, and showing it where staff look. Landlord B's books
are always there and must neither be checked as A's nor hide A's break."""

import logging
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from ledger import selectors, services
from ledger.models import LedgerCheck, LedgerCheckKind
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


def test_the_nightly_check_happens_once_a_local_day_and_no_check_erases_a_failure(posted):
    first = services.ledger_check_record(landlord=posted.landlord, now=NIGHT)
    break_second(posted)
    # The same night again (a redelivered task): the recorded check, nothing new.
    again = services.ledger_check_record(landlord=posted.landlord, now=NIGHT.replace(hour=15))
    assert again.pk == first.pk and again.ok
    # On demand, the break is found and kept beside the earlier check.
    found = services.ledger_check_record(
        landlord=posted.landlord, now=NIGHT.replace(hour=16), kind=LedgerCheckKind.ON_DEMAND
    )
    assert not found.ok
    # The next local day (Berlin) is a nightly row of its own.
    services.ledger_check_record(landlord=posted.landlord, now=NIGHT.replace(hour=23))
    rows = LedgerCheck.objects.filter(landlord=posted.landlord).order_by("checked_at")
    assert list(rows.values_list("kind", "ok")) == [
        ("nightly", True),
        ("on_demand", False),
        ("nightly", False),
    ]
    status = selectors.ledger_check_status(landlord=posted.landlord, now=NIGHT.replace(hour=23))
    assert status.latest.kind == "nightly" and status.last_failure.pk == status.latest.pk
    assert not status.stale
    later = selectors.ledger_check_status(
        landlord=posted.landlord, now=NIGHT.replace(hour=23) + timedelta(hours=37)
    )
    assert later.stale


def test_the_nightly_task_checks_every_landlord_in_a_task_of_its_own(posted, other_books):
    break_second(posted)
    assert ledger_checks_run.delay().get() == 2
    outcome = dict(LedgerCheck.objects.values_list("landlord__slug", "ok"))
    assert outcome == {"acme": False, "brightside": True}
    # Redelivered the same night, nothing new is recorded.
    ledger_checks_run.delay()
    assert LedgerCheck.objects.count() == 2


def test_the_ledger_page_shows_the_last_check_and_keeps_a_break_prominent(
    client, posted, other_books, django_capture_on_commit_callbacks
):
    user = MembershipFactory(landlord=posted.landlord, role="finance").user
    client.force_login(user)
    page = client.get(reverse("dashboard:ledger"), {"as_of": "2026-12-31"}).content.decode()
    assert "Not checked yet" in page and "Check the chain now" in page

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("dashboard:ledger"))
    assert response.status_code == 302
    body = client.get(response["Location"]).content.decode()
    assert "Check started" in body and "Intact" in body
    assert "3 transactions recomputed through #3" in body
    check = LedgerCheck.objects.get(landlord=posted.landlord)
    assert (check.kind, check.requested_by) == ("on_demand", user)

    # A second click within the minute starts nothing.
    with django_capture_on_commit_callbacks(execute=True):
        body = client.post(reverse("dashboard:ledger"), follow=True).content.decode()
    assert "checked less than a minute ago" in body
    assert LedgerCheck.objects.filter(landlord=posted.landlord).count() == 1

    break_second(posted)
    services.ledger_check_record(landlord=other_books.landlord, now=NIGHT)  # B stays intact
    LedgerCheck.objects.update(checked_at=NIGHT)  # the earlier click, long ago
    services.ledger_check_record(landlord=posted.landlord, now=NIGHT.replace(hour=5))
    with time_machine.travel(NIGHT + timedelta(hours=12), tick=False):
        body = client.get(reverse("dashboard:ledger")).content.decode()
    assert "found that the ledger no longer matches its hash chain" in body
    assert "Transaction #2" in body and 'role="alert"' in body
    assert "Out of date" not in body
    with time_machine.travel(NIGHT + timedelta(days=2), tick=False):
        body = client.get(reverse("dashboard:ledger")).content.decode()
    assert "Out of date" in body and "Transaction #2" in body


def test_a_viewer_sees_the_check_but_cannot_run_one(client, posted):
    services.ledger_check_record(landlord=posted.landlord, now=NIGHT)
    client.force_login(MembershipFactory(landlord=posted.landlord, role="viewer").user)
    page = client.get(reverse("dashboard:ledger")).content.decode()
    assert "Intact" in page and "Check the chain now" not in page
    assert client.post(reverse("dashboard:ledger")).status_code == 403
    assert LedgerCheck.objects.count() == 1
