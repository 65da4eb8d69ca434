"""The portal's Messages page: the dunning notices really sent to this tenant, and
nobody else's."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from invoices.models import Channel, NotificationStatus
from tests.invoices.factories import NotificationFactory

SENT_AT = datetime(2026, 11, 12, 9, 0, tzinfo=UTC)


def _notice(renter, subject, *, status=NotificationStatus.SENT, channel=Channel.EMAIL, kind=None):
    return NotificationFactory(
        landlord=renter.landlord,
        tenant=renter.tenant,
        invoice=renter.november,
        kind=kind or "dunning_overdue_notice",
        channel=channel,
        to_address=renter.tenant.email if channel == Channel.EMAIL else "+4915100000",
        subject=subject,
        body=f"{subject}: please pay {renter.november.number}",
        status=status,
        sent_at=SENT_AT if status == NotificationStatus.SENT else None,
    )


@pytest.fixture
def notices(portal_world):
    me = portal_world.me
    _notice(me, "Overdue: your rent")
    _notice(me, "", channel=Channel.SMS)
    _notice(me, "Still queued", status=NotificationStatus.QUEUED)
    _notice(me, "Invoice email", kind="invoice_issued")
    _notice(portal_world.neighbour, "Nils overdue")
    _notice(portal_world.other, "Bo overdue")
    return portal_world


def test_messages_lists_the_tenants_sent_notices_only(tenant_client, notices):
    response = tenant_client.get(reverse("portal:notices"))
    page = response.content.decode()

    assert response.status_code == 200
    assert "Overdue: your rent" in page
    assert "Text message" in page  # the SMS, which has no subject
    assert f"please pay {notices.me.november.number}" in page
    assert f'href="/portal/invoices/{notices.me.november.pk}/"' in page
    for absent in ("Still queued", "Invoice email", "Nils", "Bo overdue"):
        assert absent not in page


def test_messages_has_a_helpful_empty_state(tenant_client, portal_world):
    page = tenant_client.get(reverse("portal:notices")).content.decode()
    assert "No reminders so far" in page


def test_messages_is_in_the_tenants_language(tenant_client, notices):
    tenant = notices.me.tenant
    tenant.language = "de"
    tenant.save(update_fields=["language"])
    page = tenant_client.get(reverse("portal:notices")).content.decode()
    assert "Erinnerungen und Mahnungen" in page
    assert "Nachrichten" in page
