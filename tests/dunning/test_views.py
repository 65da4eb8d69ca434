"""Staff dunning pages: arrears, policies, lease override, messages, tenant controls and
fee waivers. Landlord B has look-alike tenants, invoices, policies and fees throughout,
so a page that forgets its scope shows them or acts on them."""

from datetime import UTC, date, datetime

import pytest
import time_machine
from django.urls import reverse

from dunning import selectors, services
from dunning.models import (
    DunningPolicy,
    DunningPolicyAssignment,
    DunningStep,
    DunningTemplate,
    TenantDunning,
)
from invoices import services as invoice_services
from invoices.models import Invoice, InvoiceState
from ledger.selectors import trial_balance
from tests.factories import MembershipFactory
from tests.invoices.factories import lease_with_charges

DEC = date(2026, 12, 1)
AFTER_DEC_DUE = datetime(2027, 1, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def after_dec_due(staff_client, owner):
    """January 10th, 2027 (December's invoices are overdue), logged in anew then."""
    with time_machine.travel(AFTER_DEC_DUE, tick=False):
        staff_client.force_login(owner)
        yield staff_client


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def bill(landlord, month=DEC):
    invoice_services.billing_run_execute(
        landlord=landlord,
        period_start=month,
        as_of=month.replace(day=28),
        started_by="test",
        on_schedule=True,
    )


def fee_on(invoice: Invoice) -> Invoice:
    return invoice_services.late_fee_invoice_issue(
        invoice=invoice,
        amount_minor=2_500,
        description=f"Late fee on {invoice.number}",
        issue_date=date(2026, 12, 11),
    )


def portfolio(landlord, names, *, fee_for=None):
    leases = [lease_with_charges(landlord=landlord, renter=name) for name in names]
    bill(landlord)
    rents = {lease.pk: Invoice.objects.get(lease=lease) for lease in leases}
    fees = {}
    for lease in leases:
        if lease.tenants.get().full_name == fee_for:
            fees[lease.pk] = fee_on(rents[lease.pk])
    return leases, rents, fees


@pytest.fixture
def theirs(other_landlord):
    """B: a tenant in arrears, a late fee, a policy, a paused state and a custom text."""
    leases, rents, fees = portfolio(
        other_landlord, ["Bianca Brightside"], fee_for="Bianca Brightside"
    )
    lease = leases[0]
    policy = services.policy_default_get_or_create(landlord=other_landlord)
    services.tenant_pause(
        landlord=other_landlord, tenant=lease.tenants.get(), reason="Brightside plan"
    )
    services.template_save(
        landlord=other_landlord,
        kind="reminder",
        language="en",
        subject="Brightside reminder",
        body="Brightside body",
        sms="Brightside sms",
    )
    return {"lease": lease, "tenant": lease.tenants.get(), "fee": fees[lease.pk], "policy": policy}


@pytest.fixture
def mine(landlord, theirs):
    leases, rents, fees = portfolio(landlord, ["Rita Late", "Olga Owes"], fee_for="Rita Late")
    rita = leases[0]
    return {
        "lease": rita,
        "tenant": rita.tenants.get(),
        "rent": rents[rita.pk],
        "fee": fees[rita.pk],
        "policy": services.policy_default_get_or_create(landlord=landlord),
    }


def client_for(client, landlord, role):
    client.force_login(MembershipFactory(landlord=landlord, role=role).user)
    return client


def b_state(other_landlord):
    return (
        list(TenantDunning.objects.filter(landlord=other_landlord).values_list()),
        list(DunningPolicy.objects.filter(landlord=other_landlord).values_list()),
        list(DunningPolicyAssignment.objects.filter(landlord=other_landlord).values_list()),
        list(DunningTemplate.objects.filter(landlord=other_landlord).values_list()),
        list(Invoice.objects.filter(landlord=other_landlord).values_list("pk", "state")),
        DunningStep.objects.filter(landlord=other_landlord).count(),
    )


# --- arrears -----------------------------------------------------------------------------


def test_the_arrears_page_shows_aging_totals_badges_and_next_steps(
    landlord, mine, after_dec_due, django_assert_max_num_queries
):
    services.tenant_pause(landlord=landlord, tenant=mine["tenant"], reason="Payment plan")

    with django_assert_max_num_queries(20):
        response = after_dec_due.get(reverse("dashboard:arrears"))

    assert response.status_code == 200
    body = response.content.decode()
    rows = {r.tenant_name: r for r in response.context["arrears"].rows}
    assert set(rows) == {"Rita Late", "Olga Owes"}
    assert rows["Rita Late"].buckets["d31_60"] == 120_000  # due 12-06, 35 days
    assert rows["Rita Late"].buckets["d1_30"] == 2_500  # the fee, due 12-11
    assert rows["Rita Late"].paused
    assert rows["Olga Owes"].next_step.action == "reminder"
    (eur,) = response.context["arrears"].totals
    assert eur.total_minor == 242_500
    assert "Paused" in body
    assert "€2,425.00" in body
    assert reverse("dashboard:tenant_dunning", args=[mine["tenant"].pk]) in body


def test_the_arrears_page_never_shows_another_landlords_tenants(mine, theirs, after_dec_due):
    everyone = after_dec_due.get(reverse("dashboard:arrears"))
    searched = after_dec_due.get(reverse("dashboard:arrears"), {"q": "Bianca"})

    assert everyone.status_code == searched.status_code == 200
    assert "Bianca" not in everyone.content.decode()
    assert reverse("dashboard:tenant_dunning", args=[theirs["tenant"].pk]) not in (
        everyone.content.decode()
    )
    assert searched.context["arrears"].rows == []
    assert searched.context["arrears"].totals == []


def test_the_arrears_page_sorts_and_searches(mine, after_dec_due):
    response = after_dec_due.get(reverse("dashboard:arrears"), {"q": "owes", "sort": "name"})

    assert [r.tenant_name for r in response.context["arrears"].rows] == ["Olga Owes"]
    assert response.context["sort"] == "name"


def test_the_arrears_page_says_so_when_nobody_owes(staff_client, landlord, theirs):
    response = staff_client.get(reverse("dashboard:arrears"))

    assert response.status_code == 200
    assert "Nobody owes anything" in response.content.decode()


# --- isolation ---------------------------------------------------------------------------

B_URLS = [
    ("tenant_dunning", "tenant"),
    ("tenant_dunning_pause", "tenant"),
    ("tenant_dunning_resume", "tenant"),
    ("tenant_dunning_clear", "tenant"),
    ("lease_dunning_policy", "lease"),
    ("invoice_fee_waive", "fee"),
    ("dunning_policy_edit", "policy"),
    ("dunning_policy_default", "policy"),
]


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize(("name", "obj"), B_URLS)
def test_every_dunning_url_with_another_landlords_id_is_not_found_and_changes_nothing(
    staff_client, mine, theirs, other_landlord, name, obj, method
):
    url = reverse(f"dashboard:{name}", args=[theirs[obj].pk])
    before = b_state(other_landlord)

    response = getattr(staff_client, method)(
        url, {"reason": "hijack", "policy": theirs["policy"].pk, "name": "Taken"}
    )

    post_only = name in ("tenant_dunning_resume", "tenant_dunning_clear", "dunning_policy_default")
    get_only = name == "tenant_dunning"
    unsupported = (post_only and method == "get") or (get_only and method == "post")
    assert response.status_code == (405 if unsupported else 404)
    assert b_state(other_landlord) == before


def test_a_lease_cannot_be_assigned_another_landlords_policy(staff_client, mine, theirs):
    response = staff_client.post(
        reverse("dashboard:lease_dunning_policy", args=[mine["lease"].pk]),
        {"policy": theirs["policy"].pk},
    )

    assert response.status_code == 200
    assert "Select a valid choice" in response.context["form"].errors["policy"][0]
    assert not DunningPolicyAssignment.objects.filter(lease=mine["lease"]).exists()


# --- policies ----------------------------------------------------------------------------


def policy_data(policy: DunningPolicy | None = None, *, steps=None, **overrides) -> dict:
    """A valid POST of the policy editor (the default policy's values)."""
    steps = steps or [
        (-3, "reminder", "email"),
        (0, "due_notice", "email"),
        (1, "overdue_notice", "email_then_sms"),
        (5, "late_fee", "email"),
        (7, "overdue_notice", "both"),
        (14, "final_notice", "both"),
        (21, "escalate", "none"),
    ]
    data = {
        "name": policy.name if policy else "Strict",
        "send_window_start": "08:00",
        "send_window_end": "20:00",
        "fee_kind": "flat",
        "fee_flat_minor": "25.00",
        "fee_percent_bp": "",
        "fee_tiers": "",
        "daily_fee_minor": "",
        "daily_fee_cap_minor": "",
        "min_overdue_minor": "",
        "max_fee_minor": "50.00",
        "retry_days": "1, 3, 5, 7",
        "steps-TOTAL_FORMS": str(len(steps) + 1),
        "steps-INITIAL_FORMS": str(len(steps)),
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "30",
        "save": "1",
    }
    for i, (offset, action, channels) in enumerate([*steps, ("", "", "email")]):
        data[f"steps-{i}-offset_days"] = str(offset)
        data[f"steps-{i}-action"] = action
        data[f"steps-{i}-channels"] = channels
    return data | overrides


def rules_of(policy):
    policy = DunningPolicy.objects.get(pk=policy.pk)
    return selectors.policy_rules(policy), policy.name, policy.updated_at


def test_the_policy_editor_shows_the_policy_and_a_preview(staff_client, mine):
    response = staff_client.get(reverse("dashboard:dunning_policy_edit", args=[mine["policy"].pk]))

    assert response.status_code == 200
    rows = response.context["preview_rows"]
    assert [r.action for r in rows][:2] == ["reminder", "due_notice"]
    assert [r.fee_minor for r in rows if r.action == "late_fee"] == [2_500]
    assert response.context["form"]["fee_flat_minor"].value() == "25.00"
    assert 'value="25.00"' in response.content.decode()


def test_a_valid_policy_edit_is_saved_with_amounts_in_minor_units(staff_client, mine):
    policy = mine["policy"]

    response = staff_client.post(
        reverse("dashboard:dunning_policy_edit", args=[policy.pk]),
        policy_data(
            policy,
            fee_flat_minor="30.50",
            max_fee_minor="100",
            retry_days="2, 4",
            steps=[(-5, "reminder", "sms"), (6, "late_fee", "email")],
        ),
    )

    assert response.status_code == 302
    data, _name, _updated = rules_of(policy)
    assert data.fee_flat_minor == 3_050
    assert data.max_fee_minor == 10_000
    assert data.retry_days == (2, 4)
    assert [s.key for s in data.steps] == ["reminder-5", "late_fee+6"]
    assert data.steps[0].channels == "sms"


def test_a_new_policy_can_be_made_the_default(staff_client, landlord, mine):
    response = staff_client.post(
        reverse("dashboard:dunning_policy_create"),
        policy_data(
            name="Strict",
            make_default="on",
            fee_kind="percent",
            fee_flat_minor="",
            fee_percent_bp="2.5",
        ),
    )

    assert response.status_code == 302
    strict = DunningPolicy.objects.get(landlord=landlord, name="Strict")
    assert strict.is_default
    assert strict.fee_percent_bp == 250
    assert not DunningPolicy.objects.get(pk=mine["policy"].pk).is_default


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"steps": [(5, "late_fee", "email"), (1, "overdue_notice", "email")]}, "steps"),
        ({"fee_flat_minor": "-5.00"}, "fee_flat_minor"),
        ({"fee_flat_minor": "80.00", "max_fee_minor": "50.00"}, "fee_flat_minor"),
        ({"send_window_start": "20:00", "send_window_end": "20:30"}, "send_window_end"),
        ({"send_window_start": "21:00", "send_window_end": "07:00"}, "send_window_end"),
        ({"daily_fee_minor": "-1"}, "daily_fee_minor"),
        ({"retry_days": "7, 3"}, "retry_days"),
        ({"fee_kind": "tiered", "fee_tiers": "500.00: 25.00\n100.00: 10.00"}, "fee_tiers"),
        ({"fee_flat_minor": "12.345"}, "fee_flat_minor"),
        ({"name": ""}, "name"),
    ],
)
def test_a_bad_policy_shows_field_errors_and_the_old_policy_stays_in_force(
    staff_client, mine, overrides, field
):
    policy = mine["policy"]
    before = rules_of(policy)

    response = staff_client.post(
        reverse("dashboard:dunning_policy_edit", args=[policy.pk]),
        policy_data(policy, **overrides),
    )

    assert response.status_code == 200
    if field == "steps":
        assert "list the steps in date order" in " ".join(response.context["steps_errors"])
        assert "list the steps in date order" in response.content.decode()
    else:
        assert response.context["form"].errors[field]
    assert rules_of(policy) == before


def test_preview_works_out_unsaved_settings_and_saves_nothing(staff_client, mine):
    policy = mine["policy"]
    before = rules_of(policy)
    data = policy_data(
        policy, fee_flat_minor="40.00", sample_amount="500.00", sample_due="2027-02-03"
    )
    del data["save"]

    response = staff_client.post(
        reverse("dashboard:dunning_policy_edit", args=[policy.pk]), data | {"preview": "1"}
    )

    assert response.status_code == 200
    rows = response.context["preview_rows"]
    (fee,) = [r for r in rows if r.action == "late_fee"]
    assert (fee.day, fee.fee_minor) == (date(2027, 2, 8), 4_000)
    assert rules_of(policy) == before


def test_a_policy_can_be_made_default_from_the_list(staff_client, landlord, mine):
    other = services.policy_save(
        landlord=landlord,
        policy=None,
        name="Gentle",
        data=selectors.policy_rules(mine["policy"]),
    )

    response = staff_client.post(reverse("dashboard:dunning_policy_default", args=[other.pk]))

    assert response.status_code == 302
    assert DunningPolicy.objects.get(landlord=landlord, is_default=True) == other


def test_the_policy_list_shows_the_builtin_policy_before_any_is_saved(
    staff_client, landlord, theirs
):
    response = staff_client.get(reverse("dashboard:dunning_policy_list"))

    assert response.status_code == 200
    assert "built-in standard policy applies" in response.content.decode()
    assert not DunningPolicy.objects.filter(landlord=landlord).exists()


def test_a_lease_can_follow_another_policy_and_go_back_to_the_default(staff_client, landlord, mine):
    gentle = services.policy_save(
        landlord=landlord, policy=None, name="Gentle", data=selectors.policy_rules(mine["policy"])
    )
    url = reverse("dashboard:lease_dunning_policy", args=[mine["lease"].pk])

    assert staff_client.post(url, {"policy": gentle.pk}).status_code == 302
    assert DunningPolicyAssignment.objects.get(lease=mine["lease"]).policy == gentle
    detail = staff_client.get(reverse("dashboard:lease_detail", args=[mine["lease"].pk]))
    assert "follows <strong>Gentle</strong>" in detail.content.decode()
    assert url in detail.content.decode()

    assert staff_client.post(url, {"policy": ""}).status_code == 302
    assert not DunningPolicyAssignment.objects.filter(lease=mine["lease"]).exists()


# --- message templates -------------------------------------------------------------------


def template_url(name="dunning_template_edit", kind="overdue_notice", language="de"):
    return reverse(f"dashboard:{name}", args=[kind, language])


def test_the_template_list_shows_every_kind_and_language(staff_client, landlord, theirs):
    response = staff_client.get(reverse("dashboard:dunning_template_list"))

    assert response.status_code == 200
    assert len(response.context["rows"]) == 14
    assert not [r for r in response.context["rows"] if r.customised]
    assert "Brightside" not in response.content.decode()


def test_the_template_editor_previews_with_sample_values(staff_client, mine):
    response = staff_client.get(template_url())

    assert response.status_code == 200
    assert "Alex Example" in response.context["preview"]["body"]
    assert "Zahlungserinnerung" in response.context["preview"]["subject"]


def test_an_unknown_placeholder_is_refused_on_its_field_and_nothing_is_saved(
    staff_client, landlord, mine
):
    response = staff_client.post(
        template_url(),
        {"subject": "Hallo {{ tenant_name }}", "body": "Offen: {{ amount_owed }}", "sms": "x"},
    )

    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "Unknown placeholder {{ amount_owed }}" in errors["body"][0]
    assert "subject" not in errors
    assert not DunningTemplate.objects.filter(landlord=landlord).exists()


def test_a_template_is_saved_and_reset_to_the_builtin_text(staff_client, landlord, mine):
    saved = staff_client.post(
        template_url(),
        {"subject": "Offen: {{ amount_due }}", "body": "Bitte zahlen.", "sms": "Bitte zahlen."},
    )
    assert saved.status_code == 302
    assert DunningTemplate.objects.get(landlord=landlord).subject == "Offen: {{ amount_due }}"

    confirm = staff_client.get(template_url("dunning_template_reset"))
    assert confirm.status_code == 200
    assert "Reset to the built-in text" in confirm.content.decode()
    assert staff_client.post(template_url("dunning_template_reset")).status_code == 302
    assert not DunningTemplate.objects.filter(landlord=landlord).exists()


def test_an_unknown_message_kind_or_language_is_not_found(staff_client, mine):
    assert staff_client.get(template_url(kind="ransom_note")).status_code == 404
    assert staff_client.get(template_url(language="fr")).status_code == 404
    assert staff_client.post(template_url("dunning_template_reset", kind="x")).status_code == 404


# --- tenant controls ---------------------------------------------------------------------


def test_pause_needs_a_reason_and_resume_lifts_it(staff_client, landlord, mine):
    tenant = mine["tenant"]
    pause = reverse("dashboard:tenant_dunning_pause", args=[tenant.pk])

    refused = staff_client.post(pause, {"reason": "  "})
    assert refused.status_code == 200
    assert refused.context["form"].errors["reason"]
    assert not TenantDunning.objects.filter(tenant=tenant).exists()

    assert staff_client.post(pause, {"reason": "Payment plan"}).status_code == 302
    state = TenantDunning.objects.get(tenant=tenant)
    assert (state.paused, state.pause_reason) == (True, "Payment plan")
    page = staff_client.get(reverse("dashboard:tenant_dunning", args=[tenant.pk]))
    assert "Payment plan" in page.content.decode()

    resume = reverse("dashboard:tenant_dunning_resume", args=[tenant.pk])
    assert staff_client.post(resume).status_code == 302
    assert not TenantDunning.objects.get(tenant=tenant).paused


def test_an_escalation_can_be_cleared(staff_client, landlord, mine):
    tenant = mine["tenant"]
    TenantDunning.objects.create(
        landlord=landlord,
        tenant=tenant,
        escalated_at=datetime(2026, 12, 27, tzinfo=UTC),
        escalation_note="INV unpaid 21 days",
    )
    page = staff_client.get(reverse("dashboard:tenant_dunning", args=[tenant.pk]))
    assert "Needs attention" in page.content.decode()

    response = staff_client.post(reverse("dashboard:tenant_dunning_clear", args=[tenant.pk]))

    assert response.status_code == 302
    assert TenantDunning.objects.get(tenant=tenant).escalated_at is None


def test_waiving_a_fee_asks_for_confirmation_then_posts_a_reversal(staff_client, landlord, mine):
    fee = mine["fee"]
    url = reverse("dashboard:invoice_fee_waive", args=[fee.pk])

    confirm = staff_client.get(url)
    assert confirm.status_code == 200
    assert "Waive the fee" in confirm.content.decode()
    assert Invoice.objects.get(pk=fee.pk).state == InvoiceState.ISSUED

    assert staff_client.post(url, {"reason": ""}).status_code == 200
    assert Invoice.objects.get(pk=fee.pk).state == InvoiceState.ISSUED

    response = staff_client.post(url, {"reason": "Goodwill"})

    assert response.status_code == 302
    assert Invoice.objects.get(pk=fee.pk).state == InvoiceState.VOID
    step = DunningStep.objects.get(landlord=landlord, action="waive")
    assert (step.invoice_id, step.fee_invoice_id) == (mine["rent"].pk, fee.pk)
    assert trial_balance(landlord=landlord).is_balanced
    again = staff_client.post(url, {"reason": "Twice"})
    assert again.status_code == 200
    assert DunningStep.objects.filter(landlord=landlord, action="waive").count() == 1


def test_a_rent_invoice_cannot_be_waived(staff_client, mine):
    response = staff_client.post(
        reverse("dashboard:invoice_fee_waive", args=[mine["rent"].pk]), {"reason": "No"}
    )

    assert response.status_code == 200
    assert Invoice.objects.get(pk=mine["rent"].pk).state == InvoiceState.ISSUED


# --- timelines on the invoice and tenant pages -------------------------------------------


@pytest.fixture
def ticked(landlord, mine):
    services.dunning_tick(now=datetime(2026, 12, 3, 9, 0, tzinfo=UTC), landlord=landlord)
    return mine


def test_the_invoice_page_shows_its_dunning_timeline_with_message_status(staff_client, ticked):
    response = staff_client.get(reverse("dashboard:invoice_detail", args=[ticked["rent"].pk]))

    assert response.status_code == 200
    body = response.content.decode()
    assert "Reminder before due" in body
    assert "rita@example.test" in body


def test_the_fee_invoice_page_offers_the_waiver_to_money_managers_only(client, landlord, ticked):
    url = reverse("dashboard:invoice_detail", args=[ticked["fee"].pk])
    waive = reverse("dashboard:invoice_fee_waive", args=[ticked["fee"].pk])

    assert waive in client_for(client, landlord, "manager").get(url).content.decode()
    assert waive not in client_for(client, landlord, "viewer").get(url).content.decode()


def test_the_fee_invoice_page_points_to_the_messages_of_the_invoice_it_is_charged_on(
    staff_client, ticked
):
    body = staff_client.get(
        reverse("dashboard:invoice_detail", args=[ticked["fee"].pk])
    ).content.decode()

    rent = reverse("dashboard:invoice_detail", args=[ticked["rent"].pk])
    assert "messages about this late fee are listed under" in body
    assert f'<a href="{rent}">{ticked["rent"].number}</a>' in body
    assert "No messages were sent about this invoice" not in body


def test_the_tenant_page_shows_the_dunning_panel(staff_client, landlord, ticked):
    services.tenant_pause(landlord=landlord, tenant=ticked["tenant"], reason="Plan")

    response = staff_client.get(reverse("dashboard:tenant_detail", args=[ticked["tenant"].pk]))

    body = response.content.decode()
    assert "Reminder before due" in body
    assert "Paused" in body
    assert reverse("dashboard:tenant_dunning", args=[ticked["tenant"].pk]) in body


# --- roles -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "manager", "finance", "viewer"])
def test_every_role_may_look_at_arrears_policies_messages_and_timelines(
    client, landlord, mine, role
):
    client = client_for(client, landlord, role)

    for url in (
        reverse("dashboard:arrears"),
        reverse("dashboard:dunning_policy_list"),
        reverse("dashboard:dunning_template_list"),
        reverse("dashboard:tenant_dunning", args=[mine["tenant"].pk]),
    ):
        assert client.get(url).status_code == 200, url


@pytest.mark.parametrize("role", ["manager", "finance", "viewer"])
def test_only_settings_managers_may_edit_policies_and_messages(client, landlord, mine, role):
    client = client_for(client, landlord, role)
    policy = mine["policy"]
    before = rules_of(policy)

    for url in (
        reverse("dashboard:dunning_policy_edit", args=[policy.pk]),
        reverse("dashboard:dunning_policy_create"),
        template_url(),
        template_url("dunning_template_reset"),
        reverse("dashboard:lease_dunning_policy", args=[mine["lease"].pk]),
    ):
        assert client.get(url).status_code == 403, url
    posted = client.post(
        reverse("dashboard:dunning_policy_edit", args=[policy.pk]),
        policy_data(policy, fee_flat_minor="45.00"),
    )
    assert posted.status_code == 403
    assert client.post(template_url(), {"subject": "x", "body": "x", "sms": "x"}).status_code == 403
    assert rules_of(policy) == before
    assert not DunningTemplate.objects.filter(landlord=landlord).exists()


@pytest.mark.parametrize(
    ("role", "allowed"), [("manager", True), ("finance", False), ("viewer", False)]
)
def test_only_money_managers_may_pause_or_waive(client, landlord, mine, role, allowed):
    client = client_for(client, landlord, role)
    tenant, fee = mine["tenant"], mine["fee"]

    paused = client.post(
        reverse("dashboard:tenant_dunning_pause", args=[tenant.pk]), {"reason": "Plan"}
    )
    waived = client.post(
        reverse("dashboard:invoice_fee_waive", args=[fee.pk]), {"reason": "Goodwill"}
    )

    assert paused.status_code == (302 if allowed else 403)
    assert waived.status_code == (302 if allowed else 403)
    assert TenantDunning.objects.filter(tenant=tenant, paused=True).exists() == allowed
    assert (Invoice.objects.get(pk=fee.pk).state == InvoiceState.VOID) == allowed
