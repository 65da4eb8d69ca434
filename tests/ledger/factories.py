"""Ledger test helpers: accounts through factory-boy, postings through the services
(a ledger row written any other way would not be part of a valid hash chain)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import factory

from ledger.models import Account, AccountCode, account_kind_for
from ledger.services import EntrySpec, TransactionSpec, account_get_or_create, transaction_post
from tenants.models import Landlord, Tenant
from tests.factories import LandlordFactory

WHEN = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


class AccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Account
        django_get_or_create = ("landlord", "code", "currency", "tenant")

    landlord = factory.SubFactory(LandlordFactory)
    code = AccountCode.BANK
    kind = factory.LazyAttribute(lambda o: account_kind_for(o.code))
    currency = factory.SelfAttribute("landlord.default_currency")
    tenant = None


@dataclass
class Books:
    """The accounts one tenant's rent flows through."""

    landlord: Landlord
    tenant: Tenant
    currency: str
    receivable: Account
    credit: Account
    rent_income: Account
    bank: Account


def books_for(landlord: Landlord, tenant: Tenant, currency: str | None = None) -> Books:
    currency = currency or landlord.default_currency

    def get(code: str, for_tenant: Tenant | None = None) -> Account:
        return account_get_or_create(
            landlord=landlord, code=code, currency=currency, tenant=for_tenant
        )

    return Books(
        landlord=landlord,
        tenant=tenant,
        currency=currency,
        receivable=get(AccountCode.RECEIVABLE, tenant),
        credit=get(AccountCode.TENANT_CREDIT, tenant),
        rent_income=get(AccountCode.RENT_INCOME),
        bank=get(AccountCode.BANK),
    )


def post_charge(books: Books, amount: int, *, key: str, invoice_id: int = 1, when=WHEN):
    """Invoice issued: the tenant owes `amount` (Dr receivable, Cr rent income)."""
    return transaction_post(
        landlord=books.landlord,
        idempotency_key=key,
        effective_at=when,
        description=f"Invoice {invoice_id}",
        document_kind="invoice",
        document_id=invoice_id,
        entries=[
            EntrySpec(
                books.receivable,
                amount,
                books.currency,
                document_kind="invoice",
                document_id=invoice_id,
            ),
            EntrySpec(
                books.rent_income,
                -amount,
                books.currency,
                tenant_id=books.tenant.pk,
                document_kind="invoice",
                document_id=invoice_id,
            ),
        ],
    )


def post_payment(
    books: Books, amount: int, *, key: str, invoice_id: int = 1, payment_id: int = 1, when=WHEN
):
    """Payment received and allocated to an invoice (Dr bank, Cr receivable)."""
    return transaction_post(
        landlord=books.landlord,
        idempotency_key=key,
        effective_at=when,
        description=f"Payment {payment_id}",
        document_kind="payment",
        document_id=payment_id,
        entries=[
            EntrySpec(books.bank, amount, books.currency),
            EntrySpec(
                books.receivable,
                -amount,
                books.currency,
                document_kind="invoice",
                document_id=invoice_id,
            ),
        ],
    )


def charge_spec(books, invoice_id, amount=1_000, key=None):
    """A TransactionSpec for `transactions_post_bulk`: invoice `invoice_id` issued."""
    doc = {"document_kind": "invoice", "document_id": invoice_id}
    return TransactionSpec(
        idempotency_key=key or f"invoice-{invoice_id}",
        effective_at=WHEN + timedelta(minutes=invoice_id),
        description=f"Invoice {invoice_id}",
        entries=[
            EntrySpec(books.receivable, amount, books.currency, **doc),
            EntrySpec(books.rent_income, -amount, books.currency, **doc),
        ],
        **doc,
    )
