"""Staff invite a tenant to the portal; the emailed link sets a password once, for
seven days, and links the login to the tenant."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from portal import services
from portal.models import TenantInvitation
from portal.selectors import TENANT_SESSION_KEY
from tenants.models import AuditEvent
from tests.factories import MembershipFactory, TenantFactory

NEW_PASSWORD = "window-garden-kettle-73"


@pytest.fixture
def ada(portal_world):
    """Ada, not yet on the portal (her tenant row has no login)."""
    tenant = portal_world.me.tenant
    tenant.user = None
    tenant.save(update_fields=["user"])
    get_user_model().objects.filter(pk=portal_world.me.user.pk).delete()
    return tenant


def invite(tenant, **kwargs):
    kwargs.setdefault("email", tenant.email)
    kwargs.setdefault("invited_by", None)
    return services.tenant_invitation_create(tenant=tenant, **kwargs)


def accept_url(token: str) -> str:
    return reverse("portal:invitation_accept", args=[token])


# --- staff side -------------------------------------------------------------------------


def test_staff_invite_a_tenant_and_the_email_carries_a_single_use_link(
    client, staff_user, ada, django_capture_on_commit_callbacks
):
    client.force_login(staff_user)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("dashboard:tenant_portal_invite", args=[ada.pk]))

    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:tenant_detail", args=[ada.pk])
    invitation = TenantInvitation.objects.get(tenant=ada)
    assert invitation.email == "ada@example.test"
    assert invitation.invited_by == staff_user
    assert invitation.expires_at - invitation.created_at == pytest.approx(
        timedelta(days=7), abs=timedelta(seconds=5)
    )
    (message,) = mail.outbox
    assert message.to == ["ada@example.test"]
    assert message.subject == "Acme Lettings invites you to your tenant portal"
    token = re.search(r"/portal/invite/([^/\s]+)/", message.body)[1]
    # Only the hash is stored.
    assert token not in invitation.token_hash
    assert not TenantInvitation.objects.filter(token_hash=token).exists()
    assert AuditEvent.objects.filter(action="portal.invite", object_id=str(ada.pk)).exists()


def test_the_tenant_page_shows_the_invite_button_and_then_the_open_invitation(
    client, staff_user, ada
):
    client.force_login(staff_user)
    page = client.get(reverse("dashboard:tenant_detail", args=[ada.pk])).content.decode()
    assert "Invite to portal" in page

    invite(ada)
    page = client.get(reverse("dashboard:tenant_detail", args=[ada.pk])).content.decode()
    assert "Portal invitation sent" in page
    assert "Send portal invitation again" in page


@pytest.mark.parametrize("role", ["finance", "viewer"])
def test_staff_who_may_not_edit_tenants_or_money_cannot_invite(client, landlord, ada, role):
    client.force_login(MembershipFactory(landlord=landlord, role=role).user)

    response = client.post(reverse("dashboard:tenant_portal_invite", args=[ada.pk]))
    page = client.get(reverse("dashboard:tenant_detail", args=[ada.pk])).content.decode()

    assert response.status_code == 403
    assert not TenantInvitation.objects.exists()
    assert "Invite to portal" not in page


def test_a_tenant_without_an_email_is_invited_with_the_email_staff_type(
    client, staff_user, landlord
):
    tenant = TenantFactory(landlord=landlord, email="")
    client.force_login(staff_user)

    empty = client.post(reverse("dashboard:tenant_portal_invite", args=[tenant.pk]))
    typed = client.post(
        reverse("dashboard:tenant_portal_invite", args=[tenant.pk]), {"email": "Neu@Example.TEST"}
    )

    assert (empty.status_code, typed.status_code) == (302, 302)
    assert list(TenantInvitation.objects.values_list("email", flat=True)) == ["neu@example.test"]


def test_a_new_invitation_retires_the_older_link(ada):
    _first, old_token = invite(ada)
    _second, new_token = invite(ada)

    with pytest.raises(ValidationError, match="replaced by a newer one"):
        services.tenant_invitation_find(token=old_token)
    assert services.tenant_invitation_find(token=new_token).tenant == ada


# --- accepting --------------------------------------------------------------------------


def test_accepting_sets_the_password_links_the_login_and_opens_the_portal(client, ada):
    _invitation, token = invite(ada)

    page = client.get(accept_url(token))
    assert page.status_code == 200
    assert "Welcome, Ada Tenant" in page.content.decode()
    response = client.post(accept_url(token), {"password": NEW_PASSWORD, "password2": NEW_PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == reverse("portal:home")
    ada.refresh_from_db()
    assert ada.user.username == "ada@example.test"
    assert ada.user.check_password(NEW_PASSWORD)
    assert client.session[TENANT_SESSION_KEY] == ada.pk
    assert client.get(reverse("portal:home")).status_code == 200
    assert TenantInvitation.objects.get().accepted_by == ada.user
    assert AuditEvent.objects.filter(action="portal.join", actor=ada.user).exists()


def test_an_expired_invitation_is_refused(client, ada):
    _invitation, token = invite(ada, now=timezone.now() - timedelta(days=7, seconds=1))

    get = client.get(accept_url(token))
    post = client.post(accept_url(token), {"password": NEW_PASSWORD, "password2": NEW_PASSWORD})

    assert (get.status_code, post.status_code) == (410, 410)
    assert "expired" in post.content.decode()
    ada.refresh_from_db()
    assert ada.user is None


def test_a_used_invitation_cannot_be_used_again(client, ada):
    _invitation, token = invite(ada)
    client.post(accept_url(token), {"password": NEW_PASSWORD, "password2": NEW_PASSWORD})
    client.logout()

    again = client.post(accept_url(token), {"password": "another-pass-99", "password2": "x"})

    assert again.status_code == 410
    assert "already been used" in again.content.decode()
    ada.refresh_from_db()
    assert ada.user.check_password(NEW_PASSWORD)
    with pytest.raises(ValidationError):
        services.tenant_invitation_accept(token=token, password=NEW_PASSWORD)


def test_an_unknown_token_is_refused(client, ada):
    response = client.get(accept_url("not-a-token"))

    assert response.status_code == 410
    assert "not valid" in response.content.decode()


@pytest.mark.parametrize(
    ("password", "password2", "error"),
    [
        ("window-garden-kettle-73", "window-garden-kettle-74", "The two passwords differ."),
        ("12345678", "12345678", "too common"),
        ("", "", "This field is required."),
    ],
)
def test_a_bad_password_is_a_form_error_and_changes_nothing(
    client, ada, password, password2, error
):
    _invitation, token = invite(ada)

    response = client.post(accept_url(token), {"password": password, "password2": password2})

    assert response.status_code == 200
    assert error in response.content.decode()
    ada.refresh_from_db()
    assert ada.user is None
    assert TenantInvitation.objects.get().accepted_at is None


def test_someone_renting_elsewhere_confirms_their_existing_password(client, portal_world):
    # Bo (landlord B, already on the portal) now also rents from landlord A.
    bo_user = portal_world.other.user
    tenant_at_a = TenantFactory(landlord=portal_world.me.landlord, email=bo_user.email)
    _invitation, token = invite(tenant_at_a)

    page = client.get(accept_url(token)).content.decode()
    assert "You already have a Rentledger login" in page
    wrong = client.post(accept_url(token), {"password": "not-it"})
    assert "not the password of your existing account" in wrong.content.decode()
    right = client.post(accept_url(token), {"password": "correct-horse-battery-staple"})

    assert right.status_code == 302
    tenant_at_a.refresh_from_db()
    assert tenant_at_a.user == bo_user
    assert {t.landlord.slug for t in bo_user.tenancies.all()} == {"acme", "brightside"}
    # The session was pinned to the tenancy just accepted.
    assert client.session[TENANT_SESSION_KEY] == tenant_at_a.pk


def test_a_login_already_used_by_another_tenant_of_the_landlord_is_refused(portal_world):
    nils = portal_world.neighbour.tenant
    _invitation, token = invite(nils, email=portal_world.me.user.email)

    with pytest.raises(ValidationError, match="already belongs to another tenant"):
        services.tenant_invitation_accept(
            token=token, password="correct-horse-battery-staple", user=None
        )
    nils.refresh_from_db()
    assert nils.user == portal_world.neighbour.user


def test_the_invitation_is_rendered_in_the_tenants_language(client, ada):
    ada.language = "de"
    ada.save(update_fields=["language"])
    _invitation, token = invite(ada)

    page = client.get(accept_url(token)).content.decode()

    assert '<html lang="de">' in page
    assert "Willkommen, Ada Tenant" in page


def test_a_tenant_already_signed_in_with_the_invited_email_just_adds_the_rental(
    client, portal_world
):
    bo_user = portal_world.other.user
    tenant_at_a = TenantFactory(landlord=portal_world.me.landlord, email=bo_user.email)
    _invitation, token = invite(tenant_at_a)
    client.force_login(bo_user)

    page = client.get(accept_url(token)).content.decode()
    response = client.post(accept_url(token))

    assert f"You are logged in as {bo_user.email}." in page
    assert "Add this rental" in page
    assert response.status_code == 302
    tenant_at_a.refresh_from_db()
    assert tenant_at_a.user == bo_user
