"""A tenant sees only their own things, whatever id they type.

The walk reads the `portal` namespace from the root resolver, so a page added later
is covered, or, if it takes an id this file cannot map to a model, fails loudly until
it is mapped. Every id is tried twice: another tenant of the *same* landlord (a
missing tenant scope) and a tenant of another landlord (a missing landlord scope).
"""

from __future__ import annotations

import pytest
from django.urls import URLPattern, get_resolver, reverse

from invoices.models import Invoice
from payments.models import Method, Payment, SavedPaymentMethod
from portal.selectors import TENANT_SESSION_KEY
from tests.tenants.helpers import snapshot

# Strings that only the neighbour's and landlord B's rows contain.
OTHERS_MARKERS = ["Nils", "Nilsgasse", "Bo Other", "Bo Towers", "Brightside", "bo@example"]
# Patterns that take no object id of ours (token links, Django's reset confirm).
NOT_OBJECT_URLS = {"invitation_accept", "password_reset_confirm"}
MODELS = {"invoice": Invoice, "payment": Payment, "method": SavedPaymentMethod}


def _portal_patterns() -> list[URLPattern]:
    _prefix, resolver = get_resolver().namespace_dict["portal"]
    return [p for p in resolver.url_patterns if isinstance(p, URLPattern)]


PORTAL_PATTERNS = _portal_patterns()
WITH_IDS = [p for p in PORTAL_PATTERNS if p.pattern.converters and p.name not in NOT_OBJECT_URLS]
PAGES = [
    p
    for p in PORTAL_PATTERNS
    if not p.pattern.converters
    and hasattr(p.callback.view_class, "get")
    # Pages for signed-out visitors (they show nobody's data).
    and not p.name.startswith(("login", "logout", "password_reset"))
]


def model_for(pattern: URLPattern):
    prefix = pattern.name.split("_")[0]
    if prefix not in MODELS:
        pytest.fail(f"portal:{pattern.name} takes an id: map it to a model in this file")
    return MODELS[prefix]


@pytest.fixture
def saved_cards(portal_world):
    """A saved card for every tenant (so the card URLs have someone else's ids)."""
    cards = {}
    for n, renter in enumerate((portal_world.me, portal_world.neighbour, portal_world.other)):
        cards[renter.tenant.pk] = SavedPaymentMethod.objects.create(
            landlord=renter.landlord,
            tenant=renter.tenant,
            stripe_payment_method_id=f"pm_isolation_{n}",
            method=Method.CARD,
            brand="visa",
            last4=f"{n}{n}{n}{n}",
            autopay=True,
        )
    return cards


def their_object(model, renter, saved_cards):
    if model is Invoice:
        return renter.november
    if model is Payment:
        return renter.payments[0]
    return saved_cards[renter.tenant.pk]


def expected_status(pattern: URLPattern, method: str) -> set[int]:
    if not hasattr(pattern.callback.view_class, method.lower()):
        return {405}
    return {404}


@pytest.mark.parametrize("whose", ["neighbour", "other"])
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("pattern", WITH_IDS, ids=lambda p: p.name)
def test_a_portal_url_with_someone_elses_id_is_not_found_and_changes_nothing(
    tenant_client, portal_world, saved_cards, fake_stripe, pattern, method, whose
):
    renter = getattr(portal_world, whose)
    obj = their_object(model_for(pattern), renter, saved_cards)
    kwargs = {name: obj.pk for name in pattern.pattern.converters}
    url = reverse(f"portal:{pattern.name}", kwargs=kwargs)
    before = snapshot()

    if method == "GET":
        response = tenant_client.get(url)
    else:
        response = tenant_client.post(url, {"autopay": "on", "payment_method_id": "pm_x"})

    assert response.status_code in expected_status(pattern, method), url
    assert snapshot() == before
    assert not [m for m in OTHERS_MARKERS if m in response.content.decode(errors="replace")]
    assert fake_stripe.calls == []


@pytest.mark.parametrize("pattern", PAGES, ids=lambda p: p.name)
def test_a_portal_page_shows_none_of_anyone_elses_rows(
    tenant_client, portal_world, saved_cards, pattern
):
    response = tenant_client.get(reverse(f"portal:{pattern.name}"))

    assert response.status_code == 200
    body = response.content.decode()
    assert not [m for m in OTHERS_MARKERS if m in body]
    for renter in (portal_world.neighbour, portal_world.other):
        for url in (
            reverse("portal:invoice_detail", args=[renter.november.pk]),
            reverse("portal:invoice_detail", args=[renter.december.pk]),
            reverse("portal:payment_detail", args=[renter.payments[0].pk]),
            reverse("portal:method_remove", args=[saved_cards[renter.tenant.pk].pk]),
        ):
            assert f'"{url}"' not in body


def test_every_portal_pattern_is_walked_by_an_isolation_test_or_excused():
    walked = {p.name for p in WITH_IDS} | {p.name for p in PAGES}
    signed_out = {p.name for p in PORTAL_PATTERNS if p.name.startswith(("login", "password_reset"))}
    # Posted forms without an id, each with its own test here.
    posted = {"method_add"}
    assert walked | NOT_OBJECT_URLS | signed_out | posted | {"logout"} == {
        p.name for p in PORTAL_PATTERNS
    }


def test_saving_a_card_that_another_tenant_saved_is_refused(
    tenant_client, portal_world, saved_cards, fake_stripe
):
    theirs = saved_cards[portal_world.neighbour.tenant.pk]
    fake_stripe.methods[theirs.stripe_payment_method_id] = {
        "id": theirs.stripe_payment_method_id,
        "type": "card",
        "customer": "cus_neighbour",
        "card": {"brand": "visa", "last4": theirs.last4},
    }

    response = tenant_client.post(
        reverse("portal:method_add"), {"payment_method_id": theirs.stripe_payment_method_id}
    )

    assert response.status_code == 302
    theirs.refresh_from_db()
    assert (theirs.tenant_id, theirs.autopay) == (portal_world.neighbour.tenant.pk, True)
    assert (
        not SavedPaymentMethod.objects.filter(tenant=portal_world.me.tenant)
        .exclude(pk=saved_cards[portal_world.me.tenant.pk].pk)
        .exists()
    )


@pytest.mark.parametrize("whose", ["neighbour", "other"])
def test_the_pay_page_for_someone_elses_invoice_is_not_found(
    tenant_client, portal_world, fake_stripe, whose
):
    invoice = getattr(portal_world, whose).november

    page = tenant_client.get(reverse("portal:pay"), {"invoice": invoice.pk})
    paid = tenant_client.post(
        reverse("portal:pay"),
        {"invoice": invoice.pk, "key": "portal:1:" + "a" * 32, "payment_method_id": "pm_x"},
        HTTP_ACCEPT="application/json",
    )

    assert (page.status_code, paid.status_code) == (404, 404)
    assert fake_stripe.calls == []
    assert not Payment.objects.filter(invoice=invoice, source="stripe").exists()


def test_a_draft_invoice_is_not_shown_to_its_tenant(tenant_client, portal_world):
    draft = portal_world.me.december
    Invoice.objects.filter(pk=draft.pk).update(state="draft", number=None)

    listing = tenant_client.get(reverse("portal:invoices"))
    detail = tenant_client.get(reverse("portal:invoice_detail", args=[draft.pk]))
    pdf = tenant_client.get(reverse("portal:invoice_pdf", args=[draft.pk]))

    assert f'"{reverse("portal:invoice_detail", args=[draft.pk])}"' not in listing.content.decode()
    assert (detail.status_code, pdf.status_code) == (404, 404)


def test_signed_out_visitors_are_sent_to_the_portal_login(client, portal_world):
    response = client.get(reverse("portal:invoices"))

    assert response.status_code == 302
    assert response["Location"] == "/portal/login/?next=%2Fportal%2Finvoices%2F"


def test_a_staff_user_without_a_tenancy_is_refused_with_a_clear_message(client, staff_user):
    client.force_login(staff_user)

    response = client.get(reverse("portal:home"))

    assert response.status_code == 403
    assert "No tenant portal for this account" in response.content.decode()


def test_a_login_renting_from_two_landlords_chooses_and_sees_only_the_chosen_one(
    client, portal_world
):
    # Ada also rents Bo's flat at landlord B (one login, two Tenant rows).
    at_b = portal_world.other
    at_b.tenant.user = portal_world.me.user
    at_b.tenant.save(update_fields=["user"])
    client.force_login(portal_world.me.user)

    first = client.get(reverse("portal:invoices"))
    assert first.status_code == 302
    assert first["Location"].startswith(reverse("portal:choose"))
    choose = client.get(first["Location"]).content.decode()
    assert "Acme Lettings" in choose
    assert "Brightside Homes" in choose

    chosen = client.post(
        reverse("portal:choose"), {"tenant": at_b.tenant.pk, "next": "/portal/invoices/"}
    )
    assert chosen["Location"] == "/portal/invoices/"
    page = client.get("/portal/invoices/").content.decode()
    assert reverse("portal:invoice_detail", args=[at_b.november.pk]) in page
    assert reverse("portal:invoice_detail", args=[portal_world.me.november.pk]) not in page
    mine_at_a = reverse("portal:invoice_detail", args=[portal_world.me.november.pk])
    assert client.get(mine_at_a).status_code == 404


def test_choosing_a_tenancy_that_is_not_ones_own_is_refused(client, portal_world):
    client.force_login(portal_world.me.user)

    response = client.post(reverse("portal:choose"), {"tenant": portal_world.neighbour.tenant.pk})

    assert response.status_code == 400
    assert client.session.get(TENANT_SESSION_KEY) is None
