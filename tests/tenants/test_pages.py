"""Staff pages: every time is the landlord's local time, labelled (the activity log used
to show UTC beside pages in local time); pages say plainly when there is nothing to do."""

from datetime import UTC, datetime

from django.urls import reverse

from tenants.models import AuditEvent


def test_the_activity_log_and_overview_show_the_landlords_local_time(
    staff_client, landlord, other_landlord
):
    event = AuditEvent.objects.create(
        landlord=landlord, actor=None, action="test.event", summary="Something happened"
    )
    AuditEvent.objects.filter(pk=event.pk).update(
        created_at=datetime(2026, 12, 7, 22, 30, tzinfo=UTC)
    )
    for name in ("dashboard:audit_list", "dashboard:home"):
        page = staff_client.get(reverse(name)).content.decode()
        # Berlin is UTC+1 in December: 22:30 UTC is 23:30 the same day there.
        assert "2026-12-07 23:30" in page, name
        assert "22:30" not in page
        assert "Times are in Europe/Berlin." in page


def test_the_end_page_of_an_ended_lease_says_so_instead_of_offering_the_form(
    staff_client, landlord, other_landlord
):
    from datetime import date

    from tests.factories import LeaseFactory

    lease = LeaseFactory(
        unit__property__landlord=landlord, end_date=date(2026, 10, 15), status="ended"
    )
    page = staff_client.get(reverse("dashboard:lease_end", args=[lease.pk])).content.decode()
    assert "This lease is ended" in page
    assert "2026-10-15 as the first day the unit is free" in page
    assert "Yes, end the lease" not in page
