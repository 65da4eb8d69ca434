"""Write actions for landlords, staff, properties, units, tenants, leases and charges.

Each service is one business action in one transaction, takes keyword-only typed
arguments, validates what the database cannot say nicely, and appends an
`AuditEvent`. Database constraints remain the last word: a race that slips past a
Python check still fails in PostgreSQL and is turned into the same field error.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import date, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from tenants.models import (
    OCCUPYING_STATUSES,
    AuditEvent,
    Charge,
    ChargeFrequency,
    Landlord,
    Lease,
    LeaseStatus,
    Membership,
    Property,
    Role,
    StaffInvitation,
    Tenant,
    Unit,
)

INVITATION_LIFETIME = timedelta(days=7)

OVERLAP_MESSAGE = "This unit already has a lease for these dates."


def audit(
    *,
    landlord: Landlord,
    actor: AbstractBaseUser | None,
    action: str,
    obj: Any = None,
    summary: str = "",
    data: dict | None = None,
) -> AuditEvent:
    """Append one audit record (call inside the service's transaction)."""
    return AuditEvent.objects.create(
        landlord=landlord,
        actor=actor if actor is not None and actor.is_authenticated else None,
        action=action,
        object_type=type(obj).__name__ if obj is not None else "",
        object_id=str(getattr(obj, "pk", "") or ""),
        summary=summary[:300],
        data=data or {},
    )


def _full_clean(instance, *, exclude: list[str] | None = None) -> None:
    # validate_constraints=False: the exclusion constraint is checked by PostgreSQL
    # itself (it is the only check that holds under concurrency), see _save_lease.
    instance.full_clean(exclude=exclude, validate_constraints=False)


def _unique_slug(name: str) -> str:
    base = slugify(name)[:50] or "landlord"
    slug, n = base, 1
    while Landlord.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@transaction.atomic
def landlord_sign_up(
    *, name: str, email: str, password: str, timezone_name: str, currency: str, full_name: str = ""
) -> Membership:
    """A new customer: creates the landlord, its owner user and the owner membership."""
    User = get_user_model()
    email = User.objects.normalize_email(email).lower()
    if User.objects.filter(username__iexact=email).exists():
        raise ValidationError(
            {"email": "An account with this email already exists; log in instead."}
        )
    landlord = Landlord(
        name=name,
        slug=_unique_slug(name),
        timezone=timezone_name,
        default_currency=currency,
        email=email,
    )
    _full_clean(landlord)
    first, _, last = full_name.partition(" ")
    user = User(username=email, email=email, first_name=first, last_name=last)
    user.set_password(password)
    try:
        # Two simultaneous sign-ups can both pass the checks above; the unique
        # constraints decide, and the loser gets the same field error.
        with transaction.atomic():
            landlord.save()
            user.save()
    except IntegrityError as exc:
        name_taken = "slug" in str(exc)
        raise ValidationError(
            {"company": "That name was just taken; try again."}
            if name_taken
            else {"email": "An account with this email already exists; log in instead."}
        ) from exc
    membership = Membership.objects.create(user=user, landlord=landlord, role=Role.OWNER)
    audit(
        landlord=landlord,
        actor=user,
        action="landlord.sign_up",
        obj=landlord,
        summary=f"{name} signed up",
    )
    return membership


def user_exists(*, email: str) -> bool:
    return get_user_model().objects.filter(username__iexact=email.strip()).exists()


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def staff_invitation_create(
    *, landlord: Landlord, email: str, role: str, invited_by, now=None
) -> tuple[StaffInvitation, str]:
    """Invite someone to the landlord's staff. Returns the invitation and the raw token
    (only its hash is stored, so a database leak cannot be used to join).

    Someone already on the staff is not invited (their role is changed on the staff
    page), and an email has at most one pending invitation per landlord (a unique
    constraint): each would carry its own role, and whichever link was used would win.
    """
    if role not in Role.values:
        raise ValidationError({"role": f"{role!r} is not a role."})
    now = now or timezone.now()
    email = email.strip().lower()
    member = (
        Membership.objects.filter(landlord=landlord)
        .filter(Q(user__username__iexact=email) | Q(user__email__iexact=email))
        .first()
    )
    if member is not None:
        raise ValidationError(
            {
                "email": f"{email} is already staff here with the role "
                f"{member.get_role_display().lower()}; change their role in the staff list "
                "instead."
            }
        )
    token = secrets.token_urlsafe(32)
    invitation = StaffInvitation(
        landlord=landlord,
        email=email,
        role=role,
        token_hash=_hash_token(token),
        invited_by=invited_by,
        expires_at=now + INVITATION_LIFETIME,
    )
    _full_clean(invitation, exclude=["token_hash"])
    try:
        with transaction.atomic():
            invitation.save()
    except IntegrityError as exc:
        if _constraint_name(exc) != "invitation_one_pending_per_email":
            raise
        raise ValidationError(
            {
                "email": f"{email} already has a pending invitation; revoke it in the list "
                "of pending invitations to send a new one."
            }
        ) from exc
    audit(
        landlord=landlord,
        actor=invited_by,
        action="staff.invite",
        obj=invitation,
        summary=f"Invited {invitation.email} as {role}",
    )
    return invitation, token


@transaction.atomic
def staff_invitation_revoke(
    *, landlord: Landlord, invitation: StaffInvitation, actor, now=None
) -> StaffInvitation:
    """Withdraw a pending invitation: its link stops working at once, and the email can
    be invited again. An accepted invitation is history and cannot be revoked."""
    if invitation.landlord_id != landlord.pk:
        raise StaffInvitation.DoesNotExist
    # Locked: an acceptance at the same moment either lands first (and this refuses)
    # or waits and then finds the invitation revoked.
    invitation = StaffInvitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.accepted_at is not None:
        raise ValidationError(f"{invitation.email} has already accepted this invitation.")
    if invitation.revoked_at is not None:
        raise ValidationError("This invitation has already been revoked.")
    invitation.revoked_at = now or timezone.now()
    invitation.revoked_by = actor
    invitation.save(update_fields=["revoked_at", "revoked_by", "updated_at"])
    audit(
        landlord=landlord,
        actor=actor,
        action="staff.invite_revoke",
        obj=invitation,
        summary=f"Revoked the invitation of {invitation.email} as {invitation.role}",
    )
    return invitation


def staff_invitation_send(*, invitation: StaffInvitation, link: str) -> None:
    """Email the invitation link (sent after the invitation is committed)."""
    from django.core.mail import send_mail

    landlord = invitation.landlord
    transaction.on_commit(
        lambda: send_mail(
            subject=f"You are invited to {landlord.name} on Rentledger",
            message=(
                f"{invitation.invited_by.email} invited you to join {landlord.name} as "
                f"{invitation.get_role_display().lower()}.\n\nAccept within 7 days: {link}\n"
            ),
            from_email=None,
            recipient_list=[invitation.email],
        )
    )


def _invitation_check_usable(invitation: StaffInvitation, *, now) -> None:
    if invitation.accepted_at is not None:
        raise ValidationError("This invitation has already been used.")
    if invitation.revoked_at is not None:
        raise ValidationError("This invitation has been revoked; ask for a new one.")
    if invitation.expires_at <= now:
        raise ValidationError("This invitation has expired; ask for a new one.")


def staff_invitation_find(*, token: str, now=None) -> StaffInvitation:
    now = now or timezone.now()
    invitation = (
        StaffInvitation.objects.select_related("landlord")
        .filter(token_hash=_hash_token(token))
        .first()
    )
    if invitation is None:
        raise ValidationError("This invitation link is not valid.")
    _invitation_check_usable(invitation, now=now)
    return invitation


@transaction.atomic
def staff_invitation_accept(
    *, token: str, user=None, password: str = "", full_name: str = "", now=None
) -> Membership:
    """Single use: the invitation row is locked, checked and marked accepted in one go.
    A logged-in `user` must be the invited address.

    Someone who is already on this landlord's staff cannot accept: the invitation would
    either change their role behind the owner's back or be used up without effect.
    """
    now = now or timezone.now()
    found = staff_invitation_find(token=token, now=now)
    invitation = StaffInvitation.objects.select_for_update().get(pk=found.pk)
    # Checked again on the locked row: it may have been used or revoked meanwhile.
    _invitation_check_usable(invitation, now=now)
    User = get_user_model()
    if user is not None and invitation.email not in {
        (user.email or "").lower(),
        user.get_username().lower(),
    }:
        # The link proves access to the invited mailbox, not to this session's account: a
        # forwarded link must not add whoever happens to be logged in.
        raise ValidationError(
            f"This invitation was sent to {invitation.email}. Log out, then open the link "
            "again to accept it as that address."
        )
    if user is None:
        user = User.objects.filter(username__iexact=invitation.email).first()
        if user is None:
            if not password:
                raise ValidationError({"password": "Choose a password."})
            first, _, last = full_name.partition(" ")
            user = User(
                username=invitation.email, email=invitation.email, first_name=first, last_name=last
            )
            user.set_password(password)
            user.save()
    try:
        with transaction.atomic():
            membership = Membership.objects.create(
                user=user, landlord=invitation.landlord, role=invitation.role
            )
    except IntegrityError as exc:
        if _constraint_name(exc) != "membership_unique_user_landlord":
            raise
        existing = Membership.objects.get(user=user, landlord=invitation.landlord)
        raise ValidationError(
            f"You are already staff of {invitation.landlord.name} with the role "
            f"{existing.get_role_display().lower()}; ask an owner to change your role instead."
        ) from exc
    invitation.accepted_at = now
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by", "updated_at"])
    audit(
        landlord=invitation.landlord,
        actor=user,
        action="staff.join",
        obj=membership,
        summary=f"{user.email} joined as {membership.role}",
    )
    return membership


@transaction.atomic
def membership_set_role(
    *, landlord: Landlord, membership: Membership, role: str, actor
) -> Membership:
    """Change a staff member's role; a landlord always keeps at least one owner."""
    if membership.landlord_id != landlord.pk:
        raise Membership.DoesNotExist
    if role not in Role.values:
        raise ValidationError({"role": f"{role!r} is not a role."})
    owners = Membership.objects.select_for_update().filter(landlord=landlord, role=Role.OWNER)
    if membership.role == Role.OWNER and role != Role.OWNER and owners.count() <= 1:
        raise ValidationError({"role": "A landlord needs at least one owner."})
    old = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit(
        landlord=landlord,
        actor=actor,
        action="staff.role",
        obj=membership,
        summary=f"{membership.user.email}: {old} → {role}",
    )
    return membership


@transaction.atomic
def landlord_update(*, landlord: Landlord, actor, **fields: Any) -> Landlord:
    """Edit the landlord's profile, branding and defaults, with an audit of what changed."""
    changed = {}
    for name, value in fields.items():
        if getattr(landlord, name) != value:
            changed[name] = [str(getattr(landlord, name)), str(value)]
            setattr(landlord, name, value)
    _full_clean(landlord)
    landlord.save()
    if changed:
        audit(
            landlord=landlord,
            actor=actor,
            action="landlord.update",
            obj=landlord,
            summary="Changed " + ", ".join(sorted(changed)),
            data=changed,
        )
    return landlord


def _save_scoped(instance, *, landlord: Landlord, actor, action: str, summary: str, **fields: Any):
    created = instance.pk is None
    for name, value in fields.items():
        setattr(instance, name, value)
    instance.landlord = landlord
    _full_clean(instance)
    try:
        with transaction.atomic():
            instance.save()
    except IntegrityError as exc:
        raise _integrity_to_validation(exc) from exc
    audit(
        landlord=landlord,
        actor=actor,
        action=f"{action}.{'create' if created else 'update'}",
        obj=instance,
        summary=summary,
    )
    return instance


def _constraint_name(exc: IntegrityError) -> str:
    return getattr(getattr(exc.__cause__, "diag", None), "constraint_name", "") or ""


def _integrity_to_validation(exc: IntegrityError) -> ValidationError:
    name = _constraint_name(exc)
    messages = {
        "lease_no_overlap_per_unit": {"start_date": OVERLAP_MESSAGE},
        "property_unique_name": {"name": "You already have a property with this name."},
        "unit_unique_name_per_property": {
            "name": "This property already has a unit with this name."
        },
        "lease_end_after_start": {"end_date": "The end date must be after the start date."},
        "charge_end_after_start": {"end_date": "The end date must be after the start date."},
        "charge_amount_positive": {"amount_minor": "The amount must be greater than zero."},
        "lease_billing_day_1_28": {"billing_day": "The billing day must be between 1 and 28."},
    }
    return ValidationError(messages.get(name, {"__all__": f"Not saved: {name or exc}"}))


def _check_same_landlord(landlord: Landlord, **objects) -> None:
    for field, obj in objects.items():
        if obj is not None and obj.landlord_id != landlord.pk:
            # Never say whose it is: it simply does not exist for this landlord.
            raise ValidationError({field: "Not found."})


@transaction.atomic
def property_save(
    *, landlord: Landlord, actor, instance: Property | None = None, **fields: Any
) -> Property:
    """Create or edit a property of this landlord."""
    instance = instance or Property()
    return _save_scoped(
        instance,
        landlord=landlord,
        actor=actor,
        action="property",
        summary=fields.get("name", instance.name),
        **fields,
    )


@transaction.atomic
def unit_save(*, landlord: Landlord, actor, instance: Unit | None = None, **fields: Any) -> Unit:
    """Create or edit a unit; its property must belong to the same landlord."""
    _check_same_landlord(landlord, property=fields.get("property"))
    instance = instance or Unit()
    return _save_scoped(
        instance,
        landlord=landlord,
        actor=actor,
        action="unit",
        summary=str(fields.get("name", instance.name)),
        **fields,
    )


@transaction.atomic
def tenant_save(
    *, landlord: Landlord, actor, instance: Tenant | None = None, **fields: Any
) -> Tenant:
    """Create or edit a renter's contact record."""
    instance = instance or Tenant()
    return _save_scoped(
        instance,
        landlord=landlord,
        actor=actor,
        action="tenant",
        summary=fields.get("full_name", instance.full_name),
        **fields,
    )


@transaction.atomic
def lease_save(
    *,
    landlord: Landlord,
    actor,
    instance: Lease | None = None,
    tenants: list[Tenant],
    **fields: Any,
) -> Lease:
    """Create or edit a lease.

    Overlap with another occupying lease on the same unit is refused by the
    PostgreSQL exclusion constraint (the only check that holds when two requests
    race); its violation comes back as a field error on the start date.
    """
    _check_same_landlord(landlord, unit=fields.get("unit"))
    if not tenants:
        raise ValidationError({"tenants": "Choose at least one tenant."})
    for tenant in tenants:
        _check_same_landlord(landlord, tenants=tenant)
    instance = instance or Lease()
    if instance.pk:
        # Check the locked row, not the caller's copy: a lease ended by another request
        # since this one loaded it must not be revived by saving the stale copy.
        current = Lease.objects.select_for_update().get(pk=instance.pk)
        if current.status in (LeaseStatus.ENDED, LeaseStatus.CANCELLED):
            raise ValidationError({"__all__": "An ended or cancelled lease cannot be edited."})
        new_currency = fields.get("currency", current.currency)
        if new_currency != current.currency and current.charges.exists():
            # Charges are in the lease's currency (charge_save); keep it that way.
            raise ValidationError(
                {"currency": f"This lease has charges in {current.currency}; keep that currency."}
            )
    unit = fields.get("unit") or (instance.unit if instance.pk else None)
    if unit is not None:
        # Two overlapping INSERTs that check the exclusion constraint at the same moment
        # each wait for the other's row, and PostgreSQL aborts one with "deadlock
        # detected" instead of the violation. Writers of one unit queue on its row here
        # (NO KEY: lease FK checks still pass); the constraint still decides.
        list(Unit.objects.select_for_update(no_key=True).filter(pk=unit.pk).values("pk"))
    lease = _save_scoped(
        instance,
        landlord=landlord,
        actor=actor,
        action="lease",
        summary=f"Lease on {fields.get('unit', instance.unit if instance.pk else '')}",
        **fields,
    )
    lease.tenants.set(tenants)
    return lease


@transaction.atomic
def lease_end(*, landlord: Landlord, lease: Lease, end_date: date, reason: str, actor) -> Lease:
    """End a lease: the unit is free from `end_date` (the first day no longer let)."""
    _check_same_landlord(landlord, lease=lease)
    lease = Lease.objects.select_for_update().get(pk=lease.pk)
    if lease.status not in OCCUPYING_STATUSES and lease.status != LeaseStatus.DRAFT:
        raise ValidationError({"__all__": "This lease is already cancelled."})
    if lease.status == LeaseStatus.ENDED:
        raise ValidationError({"__all__": "This lease has already ended."})
    if end_date <= lease.start_date:
        raise ValidationError({"end_date": "The end date must be after the start date."})
    if lease.end_date is not None and end_date > lease.end_date:
        raise ValidationError({"end_date": "A lease can be ended early, not extended, here."})
    lease.end_date = end_date
    lease.status = LeaseStatus.ENDED
    lease.ended_reason = reason[:200]
    try:
        # Ending a draft makes it occupy its dates: it may overlap another lease.
        with transaction.atomic():
            lease.save(update_fields=["end_date", "status", "ended_reason", "updated_at"])
    except IntegrityError as exc:
        raise _integrity_to_validation(exc) from exc
    # Recurring charges stop with the lease.
    Charge.objects.filter(
        lease=lease, frequency=ChargeFrequency.MONTHLY, end_date__isnull=True
    ).update(end_date=end_date)
    Charge.objects.filter(
        lease=lease, frequency=ChargeFrequency.MONTHLY, end_date__gt=end_date
    ).update(end_date=end_date)
    audit(
        landlord=landlord,
        actor=actor,
        action="lease.end",
        obj=lease,
        summary=f"Ended on {end_date:%Y-%m-%d}: {reason}",
    )
    return lease


@transaction.atomic
def charge_save(
    *, landlord: Landlord, actor, lease: Lease, instance: Charge | None = None, **fields: Any
) -> Charge:
    """Add or edit a charge on a lease: amount positive, currency that of the lease.

    An ended or cancelled lease's charges are history (they were billed as they were),
    so they cannot be added to or changed.
    """
    _check_same_landlord(landlord, lease=lease)
    # The locked row, not the caller's copy: the lease may have ended since it was loaded.
    lease = Lease.objects.select_for_update().get(pk=lease.pk)
    if lease.status in (LeaseStatus.ENDED, LeaseStatus.CANCELLED):
        raise ValidationError(
            {"__all__": "Charges of an ended or cancelled lease cannot be changed."}
        )
    currency = fields.get("currency") or lease.currency
    if currency != lease.currency:
        raise ValidationError(
            {"currency": f"This lease is billed in {lease.currency}; use {lease.currency}."}
        )
    fields["currency"] = currency
    start = fields.get("start_date")
    if start and start < lease.start_date:
        raise ValidationError({"start_date": "A charge cannot start before its lease."})
    if start and lease.end_date and start >= lease.end_date:
        raise ValidationError({"start_date": "A charge must start before its lease ends."})
    instance = instance or Charge()
    return _save_scoped(
        instance,
        landlord=landlord,
        actor=actor,
        action="charge",
        lease=lease,
        summary=f"{fields.get('kind', instance.kind)} on lease {lease.pk}",
        **fields,
    )
