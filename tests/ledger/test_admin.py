import pytest
from django.urls import reverse

from tests.factories import UserFactory
from tests.ledger.factories import post_charge

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("other_books")]


@pytest.fixture
def operator_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize("model", ["account", "ledgertransaction", "ledgerentry", "ledgerhead"])
def test_the_admin_shows_ledger_rows_but_cannot_add_change_or_delete_them(
    operator_client, books, model
):
    txn = post_charge(books, 100, key="c1")
    assert operator_client.get(reverse(f"admin:ledger_{model}_changelist")).status_code == 200
    assert operator_client.get(reverse(f"admin:ledger_{model}_add")).status_code == 403

    obj_id = {
        "account": books.receivable.pk,
        "ledgertransaction": txn.pk,
        "ledgerentry": txn.entries.first().pk,
        "ledgerhead": books.landlord.pk,
    }[model]
    page = operator_client.get(reverse(f"admin:ledger_{model}_change", args=[obj_id]))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    delete = operator_client.get(reverse(f"admin:ledger_{model}_delete", args=[obj_id]))
    assert delete.status_code == 403
