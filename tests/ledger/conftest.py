import pytest

from tests.factories import TenantFactory
from tests.ledger.factories import books_for, post_charge, post_payment


@pytest.fixture
def tenant(landlord):
    return TenantFactory(landlord=landlord)


@pytest.fixture
def books(landlord, tenant):
    return books_for(landlord, tenant)


@pytest.fixture
def other_books(other_landlord):
    """Landlord B's ledger with a charge and a part payment on invoice ids that landlord A
    also uses, so a selector that forgets its landlord scope returns wrong numbers."""
    books = books_for(other_landlord, TenantFactory(landlord=other_landlord))
    for invoice_id in (1, 2):
        post_charge(books, 99_900, key=f"b-charge-{invoice_id}", invoice_id=invoice_id)
    post_payment(books, 10_000, key="b-payment-1", invoice_id=1, payment_id=1)
    return books
