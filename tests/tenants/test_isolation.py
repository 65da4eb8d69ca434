"""Landlord A's staff can neither see nor change landlord B's rows, whatever id they type.

The URL walk reads the `dashboard` namespace from the root resolver (tenants' and
invoices' pages alike), so a pattern added later is covered, or, if it takes an id
this file cannot map to a model, fails loudly until it is mapped.
"""

from datetime import date

import pytest
from django.apps import apps
from django.urls import URLPattern, get_resolver, reverse

from tenants import selectors
from tenants.middleware import SESSION_KEY
from tenants.models import Landlord, Membership
from tests.tenants.helpers import snapshot

# Marker strings that only landlord B's rows contain.
B_MARKERS = ["Brightside", "Bianca", "brightside"]
MODELS_BY_NAME = {m.__name__.lower(): m for m in apps.get_models()}


def _dashboard_patterns() -> list[URLPattern]:
    _prefix, resolver = get_resolver().namespace_dict["dashboard"]
    patterns, todo = [], list(resolver.url_patterns)
    while todo:
        entry = todo.pop(0)
        if isinstance(entry, URLPattern):
            patterns.append(entry)
        else:
            todo.extend(entry.url_patterns)
    return patterns


DASHBOARD_PATTERNS = _dashboard_patterns()
# URL parts that name no row of any landlord (a dunning message kind and language): a
# page taking only these is walked like a page without ids, with these values.
FIXED_KWARGS = {"kind": "overdue_notice", "language": "de"}
WITH_IDS = [p for p in DASHBOARD_PATTERNS if set(p.pattern.converters) - set(FIXED_KWARGS)]
WITHOUT_IDS = [p for p in DASHBOARD_PATTERNS if not set(p.pattern.converters) - set(FIXED_KWARGS)]


def fixed_url(pattern: URLPattern) -> str:
    return reverse(
        f"dashboard:{pattern.name}",
        kwargs={k: FIXED_KWARGS[k] for k in pattern.pattern.converters},
    )


def model_for(pattern: URLPattern, kwarg: str):
    """`landlord_id` → Landlord; `<model>_pk` → that model; `pk` → the view's `model`,
    else the model the url name starts with (`invoice_void` → Invoice)."""
    if kwarg == "landlord_id":
        return Landlord
    if kwarg.endswith("_pk") and kwarg[:-3] in MODELS_BY_NAME:
        return MODELS_BY_NAME[kwarg[:-3]]
    if kwarg == "pk":
        model = getattr(pattern.callback.view_class, "model", None)
        if model is not None:
            return model
        prefix = pattern.name.split("_")[0]
        if prefix in MODELS_BY_NAME:
            return MODELS_BY_NAME[prefix]
    pytest.fail(f"dashboard:{pattern.name} takes {kwarg!r}: map it to a model in this file")


def b_object(model, other_landlord):
    if model is Landlord:
        return other_landlord
    obj = model._default_manager.filter(landlord=other_landlord).order_by("pk").first()
    if obj is None:
        pytest.fail(f"give landlord B a {model.__name__} in the fixtures")
    return obj


@pytest.fixture
def theirs_billed(theirs, other_landlord):
    """B's portfolio plus a billing run and invoices, for the billing pages."""
    from invoices.services import billing_run_execute

    billing_run_execute(
        landlord=other_landlord,
        period_start=date(2026, 12, 1),
        as_of=date(2026, 12, 31),
        started_by="test",
        on_schedule=True,
    )
    # B's money pages: a manual payment and a Stripe event (payments' dashboard).
    from django.utils import timezone

    from invoices.models import Invoice
    from payments.models import EventStatus, Method, StripeEvent
    from payments.services import manual_payment_record

    invoice = Invoice.objects.filter(landlord=other_landlord).order_by("pk").first()
    manual_payment_record(
        landlord=other_landlord,
        tenant=invoice.tenant,
        amount_minor=100,
        currency=invoice.currency,
        method=Method.CASH,
        reference="B cash",
        received_on=date(2026, 11, 1),
        actor=None,
    )
    StripeEvent.objects.create(
        landlord=other_landlord,
        event_id="evt_brightside",
        type="payment_intent.succeeded",
        created=timezone.now(),
        payload={},
        raw_body="{}",
        status=EventStatus.FAILED,
    )
    # B's dunning: its policy, a custom message and a paused tenant (the dunning pages).
    from dunning import services as dunning_services

    dunning_services.policy_default_get_or_create(landlord=other_landlord)
    dunning_services.template_save(
        landlord=other_landlord,
        kind="overdue_notice",
        language="de",
        subject="Brightside Mahnung",
        body="Brightside",
        sms="Brightside",
    )
    dunning_services.tenant_pause(
        landlord=other_landlord, tenant=invoice.tenant, reason="Brightside plan"
    )
    return theirs


def forged_payload(theirs) -> dict:
    """Fields any dashboard form might accept, filled with values valid for B."""
    return {
        "name": "Taken over",
        "address_line1": "1 Hijack Street",
        "city": "Nowhere",
        "full_name": "Mallory",
        "email": "mallory@example.test",
        "property": theirs.property.pk,
        "unit": theirs.unit.pk,
        "tenants": [theirs.tenant.pk],
        "start_date": "2030-01-01",
        "end_date": "2030-02-01",
        "currency": "USD",
        "billing_day": 1,
        "due_days": 0,
        "kind": "rent",
        "frequency": "monthly",
        "amount": "1.00",
        "reason": "hijack",
        "role": "owner",
        "month": "2026-12",
    }


def expected_status(pattern: URLPattern, method: str) -> set[int]:
    view_class = pattern.callback.view_class
    if not hasattr(view_class, method.lower()):
        return {405}  # the same answer for any id, existing or not
    if "landlord_id" in pattern.pattern.converters:
        return {403, 404}
    return {404}


def b_urls(other_landlord) -> list[str]:
    """The address of every B object a page could link to."""
    urls = []
    for pattern in WITH_IDS:
        kwargs = {
            k: b_object(model_for(pattern, k), other_landlord).pk
            for k in pattern.pattern.converters
        }
        if "landlord_id" not in kwargs:
            urls.append(reverse(f"dashboard:{pattern.name}", kwargs=kwargs))
    return urls


def body_of(response) -> str:
    """The page, or the whole of a streamed download (CSV exports)."""
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("pattern", WITH_IDS, ids=lambda p: p.name)
def test_a_dashboard_url_with_another_landlords_id_is_not_found_and_changes_nothing(
    request, staff_client, mine, theirs, other_landlord, pattern, method
):
    models = {kwarg: model_for(pattern, kwarg) for kwarg in pattern.pattern.converters}
    if any(model._meta.app_label != "tenants" for model in models.values()):
        request.getfixturevalue("theirs_billed")
    kwargs = {kwarg: b_object(model, other_landlord).pk for kwarg, model in models.items()}
    url = reverse(f"dashboard:{pattern.name}", kwargs=kwargs)
    before = snapshot()

    if method == "GET":
        response = staff_client.get(url)
    else:
        response = staff_client.post(url, forged_payload(theirs))

    assert response.status_code in expected_status(pattern, method), url
    assert snapshot() == before
    assert not any(marker in body_of(response) for marker in B_MARKERS)


@pytest.mark.parametrize(
    "pattern",
    [p for p in WITHOUT_IDS if hasattr(p.callback.view_class, "get")],
    ids=lambda p: p.name,
)
def test_a_dashboard_page_shows_none_of_another_landlords_rows(
    staff_client, mine, theirs_billed, other_landlord, pattern
):
    response = staff_client.get(fixed_url(pattern))

    assert response.status_code == 200
    body = body_of(response)
    assert not [marker for marker in B_MARKERS if marker in body]
    assert not [url for url in b_urls(other_landlord) if f'"{url}"' in body]


def test_every_dashboard_pattern_is_walked_by_one_of_the_isolation_tests():
    walked = {p.name for p in WITH_IDS} | {
        p.name for p in WITHOUT_IDS if hasattr(p.callback.view_class, "get")
    }
    assert walked == {p.name for p in DASHBOARD_PATTERNS}


def test_switching_to_a_landlord_one_is_not_a_member_of_is_refused(
    staff_client, mine, theirs, other_landlord, landlord
):
    response = staff_client.post(reverse("dashboard:switch_landlord", args=[other_landlord.pk]))

    assert response.status_code in (403, 404)
    assert staff_client.session.get(SESSION_KEY) != other_landlord.pk
    home = staff_client.get(reverse("dashboard:home"))
    assert home.context["current_landlord"] == landlord


def test_switching_to_a_landlord_one_is_a_member_of_works(
    staff_client, owner, mine, other_landlord
):
    Membership.objects.create(user=owner, landlord=other_landlord, role="viewer")

    response = staff_client.post(reverse("dashboard:switch_landlord", args=[other_landlord.pk]))

    assert response.status_code == 302
    assert staff_client.get(reverse("dashboard:home")).context["current_landlord"] == (
        other_landlord
    )


def test_a_unit_posted_with_another_landlords_property_is_a_form_error(staff_client, mine, theirs):
    before = snapshot()

    response = staff_client.post(
        reverse("dashboard:unit_create"), {"property": theirs.property.pk, "name": "Sneaky"}
    )

    assert response.status_code == 200
    assert "Select a valid choice" in response.context["form"].errors["property"][0]
    assert snapshot() == before


def test_a_lease_posted_with_another_landlords_tenant_is_a_form_error(staff_client, mine, theirs):
    before = snapshot()

    response = staff_client.post(
        reverse("dashboard:lease_create"),
        {
            "unit": mine.vacant_unit.pk,
            "tenants": [theirs.tenant.pk],
            "start_date": "2026-03-01",
            "currency": "EUR",
            "billing_day": 1,
            "due_days": 0,
        },
    )

    assert response.status_code == 200
    assert "Select a valid choice" in response.context["form"].errors["tenants"][0]
    assert snapshot() == before


def test_a_lease_posted_with_another_landlords_unit_is_a_form_error(staff_client, mine, theirs):
    before = snapshot()

    response = staff_client.post(
        reverse("dashboard:lease_create"),
        {
            "unit": theirs.vacant_unit.pk,
            "tenants": [mine.tenant.pk],
            "start_date": "2026-03-01",
            "currency": "EUR",
            "billing_day": 1,
            "due_days": 0,
        },
    )

    assert response.status_code == 200
    assert "Select a valid choice" in response.context["form"].errors["unit"][0]
    assert snapshot() == before


# --- selectors -------------------------------------------------------------------------


def test_property_list_searched_by_another_landlords_name_returns_nothing(landlord, mine, theirs):
    assert list(selectors.property_list(landlord=landlord, search="Brightside")) == []


def test_property_list_searched_by_a_shared_word_returns_only_own_rows(landlord, mine, theirs):
    assert list(selectors.property_list(landlord=landlord, search="Tower")) == [mine.property]


def test_unit_list_searched_by_another_landlords_name_returns_nothing(landlord, mine, theirs):
    assert list(selectors.unit_list(landlord=landlord, search="Brightside")) == []


def test_unit_list_searched_by_a_shared_word_returns_only_own_rows(landlord, mine, theirs):
    found = selectors.unit_list(landlord=landlord, search="Flat", today=mine.lease.start_date)

    assert set(found) == {mine.unit, mine.vacant_unit}


def test_unit_list_filtered_by_another_landlords_property_returns_nothing(landlord, mine, theirs):
    assert list(selectors.unit_list(landlord=landlord, property_id=theirs.property.pk)) == []


def test_tenant_list_searched_by_another_landlords_name_returns_nothing(landlord, mine, theirs):
    assert list(selectors.tenant_list(landlord=landlord, search="Bianca")) == []


def test_tenant_list_searched_by_a_shared_email_domain_returns_only_own_rows(
    landlord, mine, theirs
):
    assert set(selectors.tenant_list(landlord=landlord, search="example.test")) == {mine.tenant}


def test_lease_list_searched_by_another_landlords_tenant_returns_nothing(landlord, mine, theirs):
    assert list(selectors.lease_list(landlord=landlord, search="Bianca")) == []


def test_lease_list_searched_by_a_shared_word_returns_only_own_rows(landlord, mine, theirs):
    assert list(selectors.lease_list(landlord=landlord, search="Tower")) == [mine.lease]


def test_lease_list_filtered_by_another_landlords_unit_or_tenant_returns_nothing(
    landlord, mine, theirs
):
    assert list(selectors.lease_list(landlord=landlord, unit_id=theirs.unit.pk)) == []
    assert list(selectors.lease_list(landlord=landlord, tenant_id=theirs.tenant.pk)) == []


def test_charge_list_for_another_landlords_lease_returns_nothing(landlord, mine, theirs):
    assert list(selectors.charge_list(landlord=landlord, lease=theirs.lease)) == []


def test_audit_list_returns_only_own_events(landlord, mine, theirs):
    summaries = [e.summary for e in selectors.audit_list(landlord=landlord)]

    assert "Acme was seeded" in summaries
    assert not [s for s in summaries if "Brightside" in s]


def test_membership_list_returns_only_own_staff(landlord, mine, theirs):
    emails = {m.user.email for m in selectors.membership_list(landlord=landlord)}

    assert "manager@acme.test" in emails
    assert "manager@brightside.test" not in emails


def test_dashboard_counts_count_only_own_rows(landlord, mine, theirs):
    counts = selectors.dashboard_counts(landlord=landlord, today=mine.lease.start_date)

    assert counts == {
        "properties": 1,
        "units": 2,
        "tenants": 1,
        "active_leases": 1,
        "vacant_units": 1,
    }
