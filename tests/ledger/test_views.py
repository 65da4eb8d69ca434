"""Staff ledger pages and the CSV exports: trial balance, journal, tenant statement.

Landlord B always has look-alike invoices and postings, so a page or export that
forgets its scope shows them."""

import csv
import io
from datetime import UTC, date, datetime

import pytest
import time_machine
from django.urls import reverse

from ledger import selectors
from ledger.models import AccountCode, LedgerEntry, LedgerHead, LedgerTransaction
from ledger.services import AccountKey, EntrySpec, accounts_get_or_create, transaction_post
from tests.factories import ChargeFactory, LeaseFactory, MembershipFactory, TenantFactory
from tests.invoices.test_selectors import pay
from tests.invoices.test_views import bill, portfolio

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def theirs(other_landlord):
    return portfolio(other_landlord, 3, prefix="Brightside")


@pytest.fixture
def mine(landlord, theirs):
    invoices = portfolio(landlord, 4, prefix="Acme")
    pay(invoices[0], 10_000)
    return invoices


def url(name, *args):
    return reverse(f"dashboard:{name}", args=args)


def client_as(client, landlord, role):
    client.force_login(MembershipFactory(landlord=landlord, role=role).user)
    return client


def rows_of(response) -> list[dict]:
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode("utf-8")
    assert body.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(body[1:])))


# --- trial balance ------------------------------------------------------------------


def test_the_ledger_page_shows_the_landlords_balanced_trial_balance(staff_client, landlord, mine):
    response = staff_client.get(url("ledger"), {"as_of": "2026-12-31"})
    assert response.status_code == 200
    assert response.context["balance"] == selectors.trial_balance(landlord=landlord)
    assert response.context["balance"].is_balanced
    assert [currency for currency, *_ in response.context["lines"]] == ["EUR"]  # not B's USD
    body = response.content.decode()
    assert "Balanced" in body and "rent_income" in body
    head = LedgerHead.objects.get(landlord=landlord)
    assert head.last_hash in body
    assert head.last_seq == LedgerTransaction.objects.filter(landlord=landlord).count()


def test_the_trial_balance_is_as_of_today_in_the_landlords_zone_by_default(staff_client, mine):
    # 4 December 23:30 UTC is 5 December in Berlin: the payment of the 5th is in.
    with time_machine.travel(datetime(2026, 12, 4, 23, 30, tzinfo=UTC), tick=False):
        response = staff_client.get(url("ledger"))
    assert response.context["as_of"] == date(2026, 12, 5)
    assert "bank" in [line.code for line in response.context["balance"].lines]
    with time_machine.travel(datetime(2026, 12, 4, 22, 30, tzinfo=UTC), tick=False):
        response = staff_client.get(url("ledger"))
    assert response.context["as_of"] == date(2026, 12, 4)
    assert "bank" not in [line.code for line in response.context["balance"].lines]


def test_the_trial_balance_as_of_a_day_before_any_posting_is_empty(staff_client, mine):
    response = staff_client.get(url("ledger"), {"as_of": "2026-11-30"})
    assert response.status_code == 200
    assert response.context["balance"].lines == []
    assert "Nothing was posted to the ledger by the end of 30 November 2026" in (
        response.content.decode()
    )


def test_a_malformed_as_of_date_is_a_400_naming_the_field(staff_client, mine):
    page = staff_client.get(url("ledger"), {"as_of": "31/12/2026"})
    assert page.status_code == 400
    assert "balance" not in page.context
    assert "As of: Enter a date as YYYY-MM-DD" in page.content.decode()
    download = staff_client.get(url("ledger_tb_csv"), {"as_of": "yesterday"})
    assert download.status_code == 400
    assert download.content.decode().startswith("as_of: Enter a date as YYYY-MM-DD")


def test_the_trial_balance_csv_balances_and_holds_only_this_landlords_accounts(
    client, landlord, mine
):
    response = client_as(client, landlord, "finance").get(
        url("ledger_tb_csv"), {"as_of": "2026-12-31"}
    )
    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        'attachment; filename="acme-trial-balance-2026-12-31.csv"'
    )
    rows = rows_of(response)
    assert {r["currency"] for r in rows} == {"EUR"}
    assert {r["as_of"] for r in rows} == {"2026-12-31"}
    expected = selectors.trial_balance(landlord=landlord)
    assert [r["account"] for r in rows] == [line.code for line in expected.lines]
    cents = [round(float(r["balance"]) * 100) for r in rows]
    assert sum(cents) == 0
    receivable = next(r for r in rows if r["account"] == "receivable")
    owed = sum(i.total_minor for i in mine) - 10_000
    assert receivable["balance"] == f"{owed // 100}.{owed % 100:02d}"


def test_a_viewer_may_look_but_not_download(client, landlord, mine):
    viewer = client_as(client, landlord, "viewer")
    page = viewer.get(url("ledger"))
    assert page.status_code == 200
    assert "Download CSV" not in page.content.decode()
    assert viewer.get(url("ledger_tb_csv")).status_code == 403
    assert viewer.get(url("ledger_journal_csv")).status_code == 403
    assert viewer.get(url("tenant_statement_csv", mine[0].tenant_id)).status_code == 403


def test_the_ledger_is_in_the_navigation(staff_client, mine):
    body = staff_client.get(url("home")).content.decode()
    assert f'href="{url("ledger")}"' in body


# --- journal ------------------------------------------------------------------------


def test_the_journal_lists_this_landlords_transactions_newest_first(staff_client, landlord, mine):
    response = staff_client.get(url("ledger_journal"))
    assert response.status_code == 200
    seqs = [t.seq for t in response.context["page"].transactions]
    ours = LedgerTransaction.objects.filter(landlord=landlord)
    assert seqs == sorted(ours.values_list("seq", flat=True), reverse=True)
    assert {t.landlord_id for t in response.context["page"].transactions} == {landlord.pk}
    body = response.content.decode()
    assert "Acme Renter 0" in body and "Brightside" not in body
    assert url("invoice_detail", mine[0].pk) in body


def test_journal_pages_by_keyset_cover_every_transaction_once(landlord, mine):
    every = list(
        LedgerTransaction.objects.filter(landlord=landlord)
        .order_by("-seq")
        .values_list("seq", flat=True)
    )
    assert len(every) == 5
    seen, page = [], selectors.journal_page(landlord=landlord, size=2)
    pages = [page]
    while page.older is not None:
        page = selectors.journal_page(landlord=landlord, size=2, older_than=page.older)
        pages.append(page)
    for p in pages:
        seen += [t.seq for t in p.transactions]
    assert seen == every
    assert pages[0].newer is None and pages[-1].older is None
    # Going back from the last page returns the page before it.
    back = selectors.journal_page(landlord=landlord, size=2, newer_than=pages[-1].newer)
    assert [t.seq for t in back.transactions] == [t.seq for t in pages[-2].transactions]


def test_the_journal_filters_by_effective_day_in_the_landlords_zone(staff_client, landlord, mine):
    # The invoices are effective on their issue day; the payment on 5 December.
    response = staff_client.get(url("ledger_journal"), {"since": "2026-12-05"})
    descriptions = [t.description for t in response.context["page"].transactions]
    assert descriptions == [f"Payment for {mine[0].number}"]
    nothing = staff_client.get(url("ledger_journal"), {"until": "2026-11-30"})
    assert nothing.context["page"].transactions == []
    assert "No transaction is effective in these dates" in nothing.content.decode()


def test_an_end_before_the_start_is_a_400_naming_the_field(staff_client, mine):
    page = staff_client.get(url("ledger_journal"), {"since": "2026-12-10", "until": "2026-12-01"})
    assert page.status_code == 400
    assert "page" not in page.context
    assert "To: The end date is before the start date." in page.content.decode()
    download = staff_client.get(
        url("ledger_journal_csv"), {"since": "2026-12-10", "until": "2026-12-01"}
    )
    assert download.status_code == 400
    assert download.content.decode() == "until: The end date is before the start date.\n"


def test_the_journal_csv_is_every_entry_in_chain_order_with_its_hashes(client, landlord, mine):
    response = client_as(client, landlord, "manager").get(url("ledger_journal_csv"))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="acme-journal.csv"'
    rows = rows_of(response)
    entries = LedgerEntry.objects.filter(landlord=landlord).order_by("transaction__seq", "pk")
    assert [int(r["entry_id"]) for r in rows] == [e.pk for e in entries]
    by_seq: dict[int, int] = {}
    for r in rows:
        assert (r["debit"] == "") != (r["credit"] == "")
        by_seq[int(r["seq"])] = by_seq.get(int(r["seq"]), 0) + int(r["amount_minor"])
    assert set(by_seq.values()) == {0}  # every transaction balances
    txns = {t.seq: t for t in LedgerTransaction.objects.filter(landlord=landlord)}
    for r in rows:
        txn = txns[int(r["seq"])]
        assert (r["hash"], r["prev_hash"]) == (txn.hash, txn.prev_hash)
        assert r["effective_at"].endswith("+01:00")  # Berlin in winter
    # The chain links row to row: each transaction's prev_hash is the hash before it.
    hashes = [txns[s].hash for s in sorted(txns)]
    assert [txns[s].prev_hash for s in sorted(txns)][1:] == hashes[:-1]
    assert rows[-1]["hash"] == LedgerHead.objects.get(landlord=landlord).last_hash


def test_a_dated_journal_csv_has_the_dates_in_its_name_and_only_those_days(
    staff_client, landlord, mine
):
    response = staff_client.get(
        url("ledger_journal_csv"), {"since": "2026-12-05", "until": "2026-12-05"}
    )
    assert response["Content-Disposition"] == (
        'attachment; filename="acme-journal-2026-12-05-2026-12-05.csv"'
    )
    rows = rows_of(response)
    assert {r["description"] for r in rows} == {f"Payment for {mine[0].number}"}


def test_text_a_spreadsheet_would_run_as_a_formula_is_exported_as_text(
    staff_client, landlord, theirs
):
    renter = TenantFactory(landlord=landlord, full_name='=HYPERLINK("http://x.test","y")')
    ChargeFactory(lease=LeaseFactory(unit__property__landlord=landlord, tenants=[renter]))
    bill(landlord)
    rows = rows_of(staff_client.get(url("ledger_journal_csv")))
    names = {r["tenant"] for r in rows if r["tenant"]}
    assert names == {'\'=HYPERLINK("http://x.test","y")'}


# --- tenant statement ---------------------------------------------------------------


def test_the_statement_csv_has_every_entry_and_ends_at_the_balance(staff_client, landlord, mine):
    tenant = mine[0].tenant
    response = staff_client.get(url("tenant_statement_csv", tenant.pk))
    assert response.status_code == 200
    rows = rows_of(response)
    statement = list(selectors.tenant_statement(landlord=landlord, tenant=tenant))
    assert [int(r["seq"]) for r in rows] == [e.seq for e in statement]
    balance = selectors.tenant_balance(landlord=landlord, tenant=tenant)["EUR"]
    assert rows[-1]["balance"] == f"{balance // 100}.{balance % 100:02d}"
    assert rows[0]["charge"] and rows[-1]["credit"] == "100.00"
    page = staff_client.get(url("tenant_statement", tenant.pk)).content.decode()
    assert url("tenant_statement_csv", tenant.pk) in page


def test_another_landlords_statement_csv_is_a_404(staff_client, mine, theirs):
    assert staff_client.get(url("tenant_statement_csv", theirs[0].tenant_id)).status_code == 404


def test_an_empty_ledger_shows_helpful_empty_states(staff_client, landlord, theirs):
    journal = staff_client.get(url("ledger_journal")).content.decode()
    assert "The ledger is empty" in journal and "Download CSV" not in journal
    ledger = staff_client.get(url("ledger"), {"as_of": date(2026, 12, 31).isoformat()})
    assert ledger.context["balance"].lines == []
    assert "Nothing was posted to the ledger" in ledger.content.decode()


# --- days at the edges --------------------------------------------------------------


def post_at(landlord, when: datetime, key: str, amount: int = 1_000) -> None:
    bank, rent = AccountKey(AccountCode.BANK, "EUR"), AccountKey(AccountCode.RENT_INCOME, "EUR")
    accounts = accounts_get_or_create(landlord=landlord, keys=[bank, rent])
    transaction_post(
        landlord=landlord,
        idempotency_key=key,
        effective_at=when,
        description=key,
        entries=[
            EntrySpec(account=accounts[bank], amount_minor=amount, currency="EUR"),
            EntrySpec(account=accounts[rent], amount_minor=-amount, currency="EUR"),
        ],
    )


def test_a_day_is_the_landlords_whole_local_day_across_a_dst_change(staff_client, landlord, theirs):
    # Berlin moved to summer time on 29 March 2026: that day had 23 hours.
    post_at(landlord, datetime(2026, 3, 28, 22, 59, tzinfo=UTC), "late on the 28th")  # 23:59
    post_at(landlord, datetime(2026, 3, 28, 23, 0, tzinfo=UTC), "first of the 29th")  # 00:00
    post_at(landlord, datetime(2026, 3, 29, 21, 59, tzinfo=UTC), "last of the 29th")  # 23:59
    post_at(landlord, datetime(2026, 3, 29, 22, 0, tzinfo=UTC), "first of the 30th")  # 00:00

    def journal(**params):
        response = staff_client.get(url("ledger_journal"), params)
        return [t.description for t in response.context["page"].transactions][::-1]

    assert journal(since="2026-03-29", until="2026-03-29") == [
        "first of the 29th",
        "last of the 29th",
    ]
    assert journal(until="2026-03-28") == ["late on the 28th"]
    assert journal(since="2026-03-30") == ["first of the 30th"]
    rows = rows_of(staff_client.get(url("ledger_journal_csv"), {"since": "2026-03-29"}))
    assert rows[0]["effective_at"] == "2026-03-29T00:00:00+01:00"
    assert rows[-1]["effective_at"] == "2026-03-30T00:00:00+02:00"
    balance = staff_client.get(url("ledger"), {"as_of": "2026-03-29"}).context["balance"]
    assert {line.code: line.debit for line in balance.lines}["bank"] == 3_000


def test_dates_without_a_next_day_are_refused_not_a_server_error(staff_client, mine):
    page = staff_client.get(url("ledger"), {"as_of": "9999-12-31"})
    assert page.status_code == 400
    assert "Enter a date before 9999-12-31." in page.content.decode()
    download = staff_client.get(url("ledger_journal_csv"), {"until": "9999-12-31"})
    assert download.status_code == 400
    assert download.content.decode() == "until: Enter a date before 9999-12-31.\n"
    assert staff_client.get(url("ledger_journal"), {"until": "9999-12-30"}).status_code == 200


def test_a_cursor_of_other_digits_is_ignored(staff_client, mine):
    response = staff_client.get(url("ledger_journal"), {"older": "²", "newer": "٣"})
    assert response.status_code == 200
    assert len(response.context["page"].transactions) == 5
