"""Accounts: sign-up, staff invitations, login, logout and password reset."""

import re
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.urls import reverse
from django.utils import timezone

from tenants import services
from tenants.middleware import SESSION_KEY
from tenants.models import AuditEvent, Landlord, Membership, StaffInvitation
from tests.factories import PASSWORD, MembershipFactory, StaffInvitationFactory, UserFactory
from tests.tenants.helpers import snapshot

User = get_user_model()
NEW_PASSWORD = "a-new-horse-battery-staple"


def sign_up(client, **overrides):
    data = {
        "company": "Canal Flats",
        "full_name": "Clara Canal",
        "email": "clara@canal.example",
        "password": "quite-a-long-passphrase",
        "timezone": "Europe/Amsterdam",
        "currency": "EUR",
    }
    return client.post(reverse("signup"), data | overrides)


def link_in(message) -> str:
    return re.search(r"https?://\S+", message.body).group(0)


def path_of(link: str) -> str:
    return re.sub(r"^https?://[^/]+", "", link)


# --- sign-up ---------------------------------------------------------------------------


def test_sign_up_creates_the_landlord_with_its_time_zone_and_currency(client, other_landlord):
    sign_up(client)

    landlord = Landlord.objects.get(name="Canal Flats")
    assert (landlord.timezone, landlord.default_currency) == ("Europe/Amsterdam", "EUR")


def test_sign_up_makes_the_new_user_the_landlords_owner(client, other_landlord):
    sign_up(client)

    membership = Membership.objects.get(user__email="clara@canal.example")
    assert membership.role == "owner"
    assert membership.landlord.name == "Canal Flats"


def test_sign_up_logs_in_and_lands_on_the_new_landlords_dashboard(client, other_landlord):
    response = sign_up(client)

    assert response.status_code == 302
    assert response.url == reverse("dashboard:home")
    home = client.get(response.url)
    assert home.status_code == 200
    assert home.context["current_landlord"].name == "Canal Flats"
    assert home.context["user"].email == "clara@canal.example"


def test_sign_up_with_an_existing_email_is_an_email_error(client, owner):
    before = snapshot()

    response = sign_up(client, email=owner.email.upper())

    assert response.status_code == 200
    assert response.context["form"].errors["email"] == [
        "An account with this email already exists; log in instead."
    ]
    assert snapshot() == before


def test_sign_up_with_an_unknown_currency_is_a_currency_error_and_creates_nothing(
    client, other_landlord
):
    before = snapshot()

    response = sign_up(client, currency="XYZ")

    assert response.status_code == 200
    assert "XYZ is not a currency code we know" in response.context["form"].errors["currency"][0]
    assert snapshot() == before


def test_sign_up_with_a_weak_password_is_a_password_error(client, other_landlord):
    response = sign_up(client, password="password")

    assert "password" in response.context["form"].errors
    assert not Landlord.objects.filter(name="Canal Flats").exists()


def test_two_landlords_with_the_same_name_get_different_slugs(client, other_landlord):
    sign_up(client)
    client.logout()
    sign_up(client, email="carl@canal.example")

    assert Landlord.objects.filter(name="Canal Flats").values("slug").distinct().count() == 2


# --- invitations -----------------------------------------------------------------------


@pytest.fixture
def invite(staff_client, mailoutbox, django_capture_on_commit_callbacks):
    """The owner invites someone through the staff page; returns the emailed link."""

    def send(email="new.hire@example.test", role="finance") -> str:
        with django_capture_on_commit_callbacks(execute=True):
            response = staff_client.post(reverse("dashboard:staff"), {"email": email, "role": role})
        assert response.status_code == 302
        return link_in(mailoutbox[-1])

    return send


def test_inviting_staff_emails_the_invitee_a_link(invite, mailoutbox, landlord):
    link = invite()

    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["new.hire@example.test"]
    assert landlord.name in mailoutbox[0].subject
    assert path_of(link).startswith("/accounts/invite/")


def test_an_invitation_stores_only_a_hash_of_its_token(invite):
    link = invite()

    token = path_of(link).rstrip("/").rsplit("/", 1)[1]
    assert not StaffInvitation.objects.filter(token_hash=token).exists()
    assert StaffInvitation.objects.get().token_hash != token


def test_no_email_is_sent_when_the_invitation_is_not_committed(
    staff_client, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        staff_client.post(reverse("dashboard:staff"), {"email": "x@example.test", "role": "viewer"})

    assert len(callbacks) == 1
    assert mailoutbox == []


def test_accepting_an_invitation_as_a_new_user_creates_a_membership_with_the_invited_role(
    invite, client, landlord
):
    link = invite(role="finance")
    client.logout()

    response = client.post(
        path_of(link), {"full_name": "Nina New", "password": "a-fine-long-passphrase"}
    )

    assert response.status_code == 302
    membership = Membership.objects.get(user__email="new.hire@example.test")
    assert (membership.landlord, membership.role) == (landlord, "finance")


def test_accepting_an_invitation_logs_the_new_user_in_to_that_landlord(invite, client, landlord):
    link = invite()
    client.logout()

    client.post(path_of(link), {"full_name": "Nina New", "password": "a-fine-long-passphrase"})

    home = client.get(reverse("dashboard:home"))
    assert home.context["user"].email == "new.hire@example.test"
    assert home.context["current_landlord"] == landlord
    assert client.session[SESSION_KEY] == landlord.pk


def test_an_existing_user_logged_in_accepts_an_invitation_without_a_new_password(
    invite, client, landlord, other_landlord
):
    link = invite(email="known@example.test", role="viewer")
    known = UserFactory(username="known@example.test")
    client.force_login(known)

    response = client.post(path_of(link), {})

    assert response.status_code == 302
    assert Membership.objects.get(user=known).role == "viewer"
    assert User.objects.filter(email="known@example.test").count() == 1


def test_a_forwarded_invitation_cannot_be_accepted_by_whoever_is_logged_in(
    invite, client, landlord, other_landlord
):
    link = invite(email="invited@example.test", role="manager")
    bystander = UserFactory(username="bystander@example.test", email="bystander@example.test")
    client.force_login(bystander)

    response = client.post(path_of(link), {})

    assert response.status_code == 200
    assert "This invitation was sent to invited@example.test" in response.content.decode()
    assert not Membership.objects.filter(user=bystander).exists()
    assert StaffInvitation.objects.get(email="invited@example.test").accepted_at is None


def test_a_used_invitation_link_is_refused(invite, client):
    link = invite()
    client.logout()
    client.post(path_of(link), {"full_name": "Nina New", "password": "a-fine-long-passphrase"})
    client.logout()

    response = client.get(path_of(link))

    assert response.status_code == 410
    assert "already been used" in response.content.decode()


def test_posting_to_a_used_invitation_link_creates_nothing(invite, client):
    link = invite()
    client.logout()
    client.post(path_of(link), {"full_name": "Nina New", "password": "a-fine-long-passphrase"})
    client.logout()
    before = snapshot()

    response = client.post(path_of(link), {"full_name": "Eve", "password": "another-passphrase"})

    assert response.status_code == 410
    assert snapshot() == before


def test_an_expired_invitation_link_is_refused(invite, client):
    link = invite()
    client.logout()

    with time_machine.travel(timezone.now() + timedelta(days=7, seconds=1)):
        response = client.get(path_of(link))

    assert response.status_code == 410
    assert "expired" in response.content.decode()


def test_an_invitation_is_still_valid_just_before_it_expires(invite, client):
    link = invite()
    client.logout()

    with time_machine.travel(timezone.now() + timedelta(days=6, hours=23)):
        response = client.get(path_of(link))

    assert response.status_code == 200


def test_the_invitation_service_refuses_an_expired_token(landlord, owner):
    invited_at = timezone.now()
    _, token = services.staff_invitation_create(
        landlord=landlord,
        email="late@example.test",
        role="viewer",
        invited_by=owner,
        now=invited_at,
    )

    with pytest.raises(ValidationError, match="expired"):
        services.staff_invitation_accept(
            token=token, password="a-fine-long-passphrase", now=invited_at + timedelta(days=8)
        )

    assert not Membership.objects.filter(user__email="late@example.test").exists()


def test_an_unknown_invitation_token_is_refused(client, other_landlord):
    response = client.get(reverse("invitation_accept", args=["not-a-token"]))

    assert response.status_code == 410


# --- who can be invited, and revoking --------------------------------------------------


def invite_form(staff_client, email: str, role: str = "viewer"):
    return staff_client.post(reverse("dashboard:staff"), {"email": email, "role": role})


def test_inviting_someone_already_on_the_staff_is_an_email_error_naming_their_role(
    staff_client, mine, theirs
):
    before = snapshot()

    response = invite_form(staff_client, "Manager@Acme.test", role="owner")

    assert response.status_code == 200
    assert response.context["form"].errors["email"] == [
        "manager@acme.test is already staff here with the role manager; change their role "
        "in the staff list instead."
    ]
    assert snapshot() == before


def test_someone_on_another_landlords_staff_can_be_invited(staff_client, mine, theirs):
    response = invite_form(staff_client, "manager@brightside.test")

    assert response.status_code == 302
    assert StaffInvitation.objects.filter(
        landlord=mine.lease.landlord, email="manager@brightside.test"
    ).exists()


def test_an_email_with_a_pending_invitation_cannot_be_invited_again(staff_client, mine, theirs):
    before = snapshot()

    response = invite_form(staff_client, " INVITEE@acme.test ", role="owner")

    assert response.status_code == 200
    assert response.context["form"].errors["email"] == [
        "invitee@acme.test already has a pending invitation; revoke it in the list of "
        "pending invitations to send a new one."
    ]
    assert snapshot() == before
    assert [i.email for i in response.context["invitations"]] == ["invitee@acme.test"]


def test_the_database_refuses_a_second_pending_invitation_for_one_email(landlord, mine, theirs):
    with pytest.raises(IntegrityError, match="invitation_one_pending_per_email"):
        StaffInvitationFactory(landlord=landlord, email="Invitee@ACME.test")


def test_another_landlord_may_invite_an_email_this_landlord_has_invited(
    landlord, other_landlord, mine, theirs
):
    StaffInvitationFactory(landlord=other_landlord, email=mine.invitation.email)

    assert StaffInvitation.objects.filter(email=mine.invitation.email).count() == 2


def test_an_email_can_be_invited_again_once_its_invitation_is_revoked(
    staff_client, landlord, owner, mine, theirs
):
    services.staff_invitation_revoke(landlord=landlord, invitation=mine.invitation, actor=owner)

    response = invite_form(staff_client, "invitee@acme.test")

    assert response.status_code == 302
    assert StaffInvitation.objects.filter(landlord=landlord, email="invitee@acme.test").count() == 2


def test_revoking_an_invitation_asks_for_confirmation_and_changes_nothing_yet(
    staff_client, mine, theirs
):
    url = reverse("dashboard:invitation_revoke", args=[mine.invitation.pk])
    staff_page = staff_client.get(reverse("dashboard:staff")).content.decode()
    before = snapshot()

    response = staff_client.get(url)

    assert f'href="{url}"' in staff_page
    assert response.status_code == 200
    assert "Revoke this invitation?" in response.content.decode()
    assert snapshot() == before


def test_revoking_an_invitation_removes_it_from_the_pending_list_with_an_audit_event(
    staff_client, owner, mine, theirs
):
    response = staff_client.post(
        reverse("dashboard:invitation_revoke", args=[mine.invitation.pk]), follow=True
    )

    assert "Invitation of invitee@acme.test revoked" in response.content.decode()
    assert list(response.context["invitations"]) == []
    mine.invitation.refresh_from_db()
    assert (mine.invitation.revoked_by, mine.invitation.accepted_at) == (owner, None)
    event = AuditEvent.objects.get(action="staff.invite_revoke")
    assert (event.landlord, event.actor, event.object_id) == (
        mine.lease.landlord,
        owner,
        str(mine.invitation.pk),
    )
    theirs.invitation.refresh_from_db()
    assert theirs.invitation.revoked_at is None


def test_a_revoked_invitation_link_is_refused_and_creates_nothing(invite, client, landlord, owner):
    link = invite(email="late.change@example.test")
    services.staff_invitation_revoke(
        landlord=landlord, invitation=StaffInvitation.objects.get(), actor=owner
    )
    client.logout()
    before = snapshot()

    page = client.get(path_of(link))
    posted = client.post(path_of(link), {"full_name": "Lou Late", "password": "a-long-passphrase"})

    assert page.status_code == posted.status_code == 410
    assert "revoked" in page.content.decode()
    assert snapshot() == before


def test_the_accept_service_refuses_a_revoked_token(landlord, owner, other_landlord):
    invitation, token = services.staff_invitation_create(
        landlord=landlord, email="gone@example.test", role="viewer", invited_by=owner
    )
    services.staff_invitation_revoke(landlord=landlord, invitation=invitation, actor=owner)

    with pytest.raises(ValidationError, match="revoked"):
        services.staff_invitation_accept(token=token, password="a-fine-long-passphrase")

    assert not User.objects.filter(username="gone@example.test").exists()


def test_an_accepted_invitation_cannot_be_revoked(invite, client, landlord, owner):
    link = invite()
    client.logout()
    client.post(path_of(link), {"full_name": "Nina New", "password": "a-fine-long-passphrase"})
    invitation = StaffInvitation.objects.get()

    with pytest.raises(ValidationError, match="already accepted"):
        services.staff_invitation_revoke(landlord=landlord, invitation=invitation, actor=owner)

    invitation.refresh_from_db()
    assert invitation.revoked_at is None


def test_another_landlords_invitation_cannot_be_revoked_through_the_service(
    landlord, owner, mine, theirs
):
    with pytest.raises(StaffInvitation.DoesNotExist):
        services.staff_invitation_revoke(
            landlord=landlord, invitation=theirs.invitation, actor=owner
        )

    theirs.invitation.refresh_from_db()
    assert theirs.invitation.revoked_at is None


def test_accepting_an_invitation_when_already_on_the_staff_is_refused_and_keeps_the_role(
    landlord, owner, other_landlord
):
    _, token = services.staff_invitation_create(
        landlord=landlord, email="known@example.test", role="owner", invited_by=owner
    )
    # Meanwhile they joined another way (an operator added them as a viewer).
    known = MembershipFactory(
        landlord=landlord, role="viewer", user__username="known@example.test"
    ).user

    with pytest.raises(ValidationError, match="already staff of Acme Lettings with the role"):
        services.staff_invitation_accept(token=token, user=known)

    assert Membership.objects.get(user=known, landlord=landlord).role == "viewer"
    assert StaffInvitation.objects.get(email="known@example.test").accepted_at is None


# --- login, logout, password reset -------------------------------------------------------


def test_the_login_page_renders(client, other_landlord):
    assert client.get(reverse("login")).status_code == 200


def test_logging_in_with_the_right_password_lands_on_the_dashboard(client, owner):
    response = client.post(reverse("login"), {"username": owner.email, "password": PASSWORD})

    assert response.status_code == 302
    assert response.url == reverse("dashboard:home")


def test_logging_in_with_a_wrong_password_is_refused(client, owner):
    response = client.post(reverse("login"), {"username": owner.email, "password": "wrong"})

    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_logout_by_get_is_not_allowed(staff_client):
    response = staff_client.get(reverse("logout"))

    assert response.status_code == 405
    assert "_auth_user_id" in staff_client.session


def test_logout_by_post_logs_out(staff_client):
    response = staff_client.post(reverse("logout"))

    assert response.status_code == 302
    assert "_auth_user_id" not in staff_client.session


def test_password_reset_emails_a_link_to_the_account(client, owner, mailoutbox):
    response = client.post(reverse("password_reset"), {"email": owner.email})

    assert response.status_code == 302
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == [owner.email]
    assert "/accounts/password/reset/" in link_in(mailoutbox[0])


def test_password_reset_for_an_unknown_email_sends_nothing_and_looks_the_same(
    client, owner, mailoutbox
):
    response = client.post(reverse("password_reset"), {"email": "nobody@example.test"})

    assert response.status_code == 302
    assert response.url == reverse("password_reset_done")
    assert mailoutbox == []


def test_the_password_reset_link_lets_the_user_set_a_new_password(client, owner, mailoutbox):
    client.post(reverse("password_reset"), {"email": owner.email})
    confirm = client.get(path_of(link_in(mailoutbox[0])), follow=True)
    assert confirm.context["validlink"]

    response = client.post(
        confirm.redirect_chain[-1][0],
        {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )

    assert response.status_code == 302
    assert response.url == reverse("password_reset_complete")
    owner.refresh_from_db()
    assert owner.check_password(NEW_PASSWORD)


def test_a_password_reset_link_works_only_once(client, owner, mailoutbox):
    client.post(reverse("password_reset"), {"email": owner.email})
    link = path_of(link_in(mailoutbox[0]))
    confirm = client.get(link, follow=True)
    client.post(
        confirm.redirect_chain[-1][0],
        {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )

    again = client.get(link, follow=True)

    assert not again.context["validlink"]
