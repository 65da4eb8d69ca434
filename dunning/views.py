"""Staff dunning pages (/app/arrears/, /app/dunning/, tenant and lease dunning pages).

Edges only, on the dashboard's `StaffView`: parse input, one call into a selector or
service, render. Looking needs VIEW; editing policies, templates and a lease's policy
needs MANAGE_SETTINGS; pausing, resuming, clearing an escalation and waiving a fee
need MANAGE_MONEY. Objects come through `get_scoped`, so another landlord's id is 404.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages as flash
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect
from django.urls import reverse

from dunning import messages, rules, selectors, services
from dunning.forms import (
    LeasePolicyForm,
    PauseForm,
    PolicyForm,
    PreviewForm,
    TemplateForm,
    WaiveForm,
    formset_steps,
    policy_initial,
    step_formset,
)
from dunning.models import DunningPolicy
from invoices.models import Invoice, InvoiceKind, InvoiceState
from tenants.forms import apply_service_errors
from tenants.models import Lease, Permission, Tenant
from tenants.views import StaffView

# --- arrears -----------------------------------------------------------------------------


class ArrearsView(StaffView):
    def get(self, request):
        arrears = selectors.arrears_get(
            landlord=self.landlord,
            today=self.today(),
            search=request.GET.get("q", ""),
            sort=request.GET.get("sort", "total"),
            page=request.GET.get("page"),
        )
        return self.render(
            "dunning/arrears.html",
            arrears=arrears,
            page=arrears.page,
            q=arrears.search,
            sort=arrears.sort,
            buckets=selectors.BUCKETS,
            today=self.today(),
        )


# --- policies ----------------------------------------------------------------------------


def _preview_rows(data: rules.PolicyRules, preview: PreviewForm):
    amount, due = preview.values()
    return rules.preview(data, due_date=due, total_minor=amount), amount, due


class PolicyListView(StaffView):
    def get(self, request):
        policies = list(selectors.policy_list(landlord=self.landlord))
        counts = selectors.policy_lease_counts(landlord=self.landlord)
        for policy in policies:
            policy.lease_count = counts.get(policy.pk, 0)
        return self.render(
            "dunning/policy_list.html",
            policies=policies,
            builtin=rules.DEFAULT_RULES if not policies else None,
            templates_customised=sum(
                row.customised for row in selectors.template_list(landlord=self.landlord)
            ),
        )


class PolicyFormView(StaffView):
    """Create (no pk) or edit a policy; "Preview" works the rules out for a sample
    invoice without saving. A refused save changes nothing: the old policy stays."""

    model = DunningPolicy
    permission = Permission.MANAGE_SETTINGS

    def get_policy(self) -> DunningPolicy | None:
        pk = self.kwargs.get("pk")
        return selectors.policy_get(landlord=self.landlord, pk=pk) if pk else None

    def currency(self) -> str:
        return self.landlord.default_currency

    def preview_form(self, data=None) -> PreviewForm:
        due = (self.today().replace(day=1) + timedelta(days=32)).replace(day=3)
        return PreviewForm(data, currency=self.currency(), due=due)

    def get(self, request, pk: int | None = None):
        policy = self.get_policy()
        if policy is not None:
            data = selectors.policy_rules(policy)
            form = PolicyForm(currency=self.currency(), policy=policy)
        else:
            data = rules.DEFAULT_RULES
            has_any = selectors.policy_choices(landlord=self.landlord).exists()
            form = PolicyForm(
                currency=self.currency(),
                initial=policy_initial(data, name="" if has_any else "Standard"),
            )
        preview = self.preview_form()
        rows, amount, due = _preview_rows(data, preview)
        return self.show(
            policy, form, step_formset(steps=data.steps), preview, rows=rows, sample=(amount, due)
        )

    def post(self, request, pk: int | None = None):
        policy = self.get_policy()
        form = PolicyForm(request.POST, currency=self.currency(), policy=policy)
        formset = step_formset(request.POST)
        preview = self.preview_form(request.POST)
        steps_errors: list[str] = []
        rows, sample = None, None
        if form.is_valid() and formset.is_valid():
            data = form.to_rules(formset_steps(formset))
            try:
                if "preview" in request.POST:
                    errors = rules.validate(data)
                    if errors:
                        raise ValidationError(errors)
                    rows, amount, due = _preview_rows(data, preview)
                    sample = (amount, due)
                else:
                    saved = services.policy_save(
                        landlord=self.landlord,
                        policy=policy,
                        name=form.cleaned_data["name"],
                        data=data,
                        make_default=form.cleaned_data.get("make_default", False),
                        actor=request.user,
                    )
                    flash.success(request, f"Dunning policy {saved.name} saved.")
                    return redirect("dashboard:dunning_policy_list")
            except ValidationError as exc:
                steps_errors = _apply_policy_errors(form, exc)
        return self.show(
            policy, form, formset, preview, rows=rows, sample=sample, steps_errors=steps_errors
        )

    def show(self, policy, form, formset, preview, *, rows, sample, steps_errors=()):
        return self.render(
            "dunning/policy_form.html",
            object=policy,
            form=form,
            formset=formset,
            preview_form=preview,
            preview_rows=rows,
            sample=sample,
            steps_errors=list(steps_errors) + list(formset.non_form_errors()),
            currency=self.currency(),
            title=f"Edit {policy.name}" if policy else "New dunning policy",
        )


def _apply_policy_errors(form, exc: ValidationError) -> list[str]:
    """Field errors onto the form; the step-list errors returned for the steps table."""
    steps: list[str] = []
    if hasattr(exc, "error_dict"):
        for name, errors in exc.message_dict.items():
            if name == "steps":
                steps.extend(errors)
            else:
                apply_service_errors(form, ValidationError({name: errors}))
    else:
        apply_service_errors(form, exc)
    return steps


class PolicyDefaultView(StaffView):
    """Make a policy the landlord's default (leases without an override follow it)."""

    model = DunningPolicy
    permission = Permission.MANAGE_SETTINGS

    def post(self, request, pk: int):
        policy = selectors.policy_get(landlord=self.landlord, pk=pk)
        if not policy.is_default:
            try:
                services.policy_save(
                    landlord=self.landlord,
                    policy=policy,
                    name=policy.name,
                    data=selectors.policy_rules(policy),
                    make_default=True,
                    actor=request.user,
                )
            except ValidationError as exc:
                flash.error(request, " ".join(exc.messages))
            else:
                flash.success(request, f"{policy.name} is now the default dunning policy.")
        return redirect("dashboard:dunning_policy_list")


class LeasePolicyView(StaffView):
    """Let one lease follow another policy than the default."""

    model = Lease
    permission = Permission.MANAGE_SETTINGS

    def get(self, request, pk: int):
        lease = self.get_scoped(Lease, pk)
        current = selectors.lease_assignment(landlord=self.landlord, lease=lease)
        form = LeasePolicyForm(
            initial={"policy": current.policy_id if current else None},
            policies=selectors.policy_choices(landlord=self.landlord),
        )
        return self.show(lease, form, current)

    def post(self, request, pk: int):
        lease = self.get_scoped(Lease, pk)
        form = LeasePolicyForm(
            request.POST, policies=selectors.policy_choices(landlord=self.landlord)
        )
        if form.is_valid():
            policy = form.cleaned_data["policy"]
            services.policy_assign(
                landlord=self.landlord, lease=lease, policy=policy, actor=request.user
            )
            flash.success(
                request,
                f"This lease follows {policy.name if policy else 'the default policy'}.",
            )
            return redirect("dashboard:lease_detail", pk=lease.pk)
        return self.show(
            lease, form, selectors.lease_assignment(landlord=self.landlord, lease=lease)
        )

    def show(self, lease, form, current):
        return self.render("dunning/lease_policy.html", object=lease, form=form, current=current)


# --- message templates -------------------------------------------------------------------


class TemplateListView(StaffView):
    def get(self, request):
        return self.render(
            "dunning/template_list.html",
            rows=selectors.template_list(landlord=self.landlord),
            languages=messages.LANGUAGES,
        )


class TemplateKindMixin:
    def kind_and_language(self, kind: str, language: str) -> tuple[str, str]:
        if kind not in messages.KINDS or language not in messages.LANGUAGES:
            raise Http404("No such message")
        return kind, language


class TemplateEditView(TemplateKindMixin, StaffView):
    """Edit one message with a live preview over sample values."""

    permission = Permission.MANAGE_SETTINGS

    def get(self, request, kind: str, language: str):
        kind, language = self.kind_and_language(kind, language)
        current = selectors.template_get(landlord=self.landlord, kind=kind, language=language)
        form = TemplateForm(
            initial={"subject": current.subject, "body": current.body, "sms": current.sms}
        )
        return self.show(kind, language, form, current)

    def post(self, request, kind: str, language: str):
        kind, language = self.kind_and_language(kind, language)
        form = TemplateForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            if "preview" not in request.POST:
                try:
                    services.template_save(
                        landlord=self.landlord,
                        kind=kind,
                        language=language,
                        subject=data["subject"],
                        body=data["body"],
                        sms=data["sms"],
                        actor=request.user,
                    )
                except ValidationError as exc:
                    apply_service_errors(form, exc)
                else:
                    flash.success(request, f"{messages.KINDS[kind]} ({language.upper()}) saved.")
                    return redirect("dashboard:dunning_template_list")
        shown = messages.Template(
            form.data.get("subject", ""), form.data.get("body", ""), form.data.get("sms", "")
        )
        return self.show(kind, language, form, shown)

    def show(self, kind, language, form, shown: messages.Template):
        sample = messages.sample_context()
        return self.render(
            "dunning/template_form.html",
            kind=kind,
            kind_label=messages.KINDS[kind],
            language=language,
            form=form,
            customised=selectors.template_is_custom(
                landlord=self.landlord, kind=kind, language=language
            ),
            preview={
                "subject": " ".join(messages.render(shown.subject, sample).split()),
                "body": messages.render(shown.body, sample),
                "sms": messages.render(shown.sms, sample),
            },
            sample=sample,
            placeholders=messages.PLACEHOLDERS,
        )


class TemplateResetView(TemplateKindMixin, StaffView):
    """Go back to the built-in wording: a confirmation page, then the reset."""

    permission = Permission.MANAGE_SETTINGS

    def get(self, request, kind: str, language: str):
        kind, language = self.kind_and_language(kind, language)
        return self.render(
            "dunning/template_reset.html",
            kind=kind,
            kind_label=messages.KINDS[kind],
            language=language,
            builtin=messages.default_template(kind, language),
            customised=selectors.template_is_custom(
                landlord=self.landlord, kind=kind, language=language
            ),
        )

    def post(self, request, kind: str, language: str):
        kind, language = self.kind_and_language(kind, language)
        services.template_reset(
            landlord=self.landlord, kind=kind, language=language, actor=request.user
        )
        flash.success(
            request, f"{messages.KINDS[kind]} ({language.upper()}) uses the built-in text."
        )
        return redirect("dashboard:dunning_template_list")


# --- a tenant's dunning ------------------------------------------------------------------


class TenantDunningView(StaffView):
    """The tenant's dunning state, controls, late fees and full timeline."""

    model = Tenant

    def get(self, request, pk: int):
        tenant = self.get_scoped(Tenant, pk)
        upcoming = selectors.next_steps(
            landlord=self.landlord, tenant_ids=[tenant.pk], today=self.today()
        )
        return self.render(
            "dunning/tenant_dunning.html",
            object=tenant,
            state=selectors.tenant_dunning_state(landlord=self.landlord, tenant=tenant),
            upcoming=[(currency, step) for (_t, currency), step in sorted(upcoming.items())],
            fee_invoices=selectors.tenant_fee_invoices(landlord=self.landlord, tenant=tenant),
            timeline=selectors.tenant_timeline(landlord=self.landlord, tenant=tenant),
            pause_form=PauseForm(),
        )


class TenantPauseView(StaffView):
    model = Tenant
    permission = Permission.MANAGE_MONEY

    def get(self, request, pk: int):
        tenant = self.get_scoped(Tenant, pk)
        return self.show(tenant, PauseForm())

    def post(self, request, pk: int):
        tenant = self.get_scoped(Tenant, pk)
        form = PauseForm(request.POST)
        if form.is_valid():
            try:
                services.tenant_pause(
                    landlord=self.landlord,
                    tenant=tenant,
                    reason=form.cleaned_data["reason"],
                    actor=request.user,
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                flash.success(request, f"Dunning is paused for {tenant.full_name}.")
                return redirect("dashboard:tenant_dunning", pk=tenant.pk)
        return self.show(tenant, form)

    def show(self, tenant, form):
        return self.render("dunning/tenant_pause.html", object=tenant, form=form)


class TenantResumeView(StaffView):
    model = Tenant
    permission = Permission.MANAGE_MONEY

    def post(self, request, pk: int):
        tenant = self.get_scoped(Tenant, pk)
        services.tenant_resume(landlord=self.landlord, tenant=tenant, actor=request.user)
        flash.success(request, f"Dunning is resumed for {tenant.full_name}.")
        return redirect("dashboard:tenant_dunning", pk=tenant.pk)


class TenantEscalationClearView(StaffView):
    model = Tenant
    permission = Permission.MANAGE_MONEY

    def post(self, request, pk: int):
        tenant = self.get_scoped(Tenant, pk)
        services.escalation_clear(landlord=self.landlord, tenant=tenant, actor=request.user)
        flash.success(request, f"The escalation of {tenant.full_name} is cleared.")
        return redirect("dashboard:tenant_dunning", pk=tenant.pk)


class FeeWaiveView(StaffView):
    """Waive a late fee: a confirmation page that requires a reason."""

    model = Invoice
    permission = Permission.MANAGE_MONEY

    def get(self, request, pk: int):
        invoice = self.get_scoped(Invoice, pk)
        return self.show(invoice, WaiveForm())

    def post(self, request, pk: int):
        invoice = self.get_scoped(Invoice, pk)
        form = WaiveForm(request.POST)
        if form.is_valid() and self.waivable(invoice):
            try:
                services.late_fee_waive(
                    landlord=self.landlord,
                    fee_invoice=invoice,
                    reason=form.cleaned_data["reason"],
                    actor=request.user,
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                flash.success(request, f"Late fee {invoice.number} is waived.")
                return redirect("dashboard:invoice_detail", pk=invoice.pk)
        return self.show(invoice, form)

    @staticmethod
    def waivable(invoice: Invoice) -> bool:
        return invoice.kind == InvoiceKind.LATE_FEE and invoice.state == InvoiceState.ISSUED

    def show(self, invoice, form):
        return self.render(
            "dunning/fee_waive.html",
            object=invoice,
            form=form,
            waivable=self.waivable(invoice),
            back=reverse("dashboard:invoice_detail", args=[invoice.pk]),
        )
