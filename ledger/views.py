"""Staff ledger pages (/app/ledger/): the trial balance, the journal, and their CSV
exports for finance staff and auditors.

Edges only, on the dashboard's `StaffView`: parse the query, call a selector, render
or stream. Looking needs VIEW; downloading needs EXPORT. Every read is the current
landlord's (`for_landlord` inside the selectors). Days are the landlord's local days.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from django import forms
from django.contrib import messages
from django.core.validators import MaxValueValidator
from django.shortcuts import redirect
from django.utils import timezone

from ledger import selectors
from ledger.models import LedgerCheckKind
from ledger.tasks import ledger_check
from tenants.exports import csv_amount, csv_download, csv_text
from tenants.models import Permission
from tenants.query import bad_query, whole_number
from tenants.views import StaffView

# The day after a day must exist: date.max + 1 day overflows.
LAST_DAY = date(9999, 12, 30)


def _day_field(label: str, help_text: str = "") -> forms.DateField:
    return forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        label=label,
        help_text=help_text,
        error_messages={"invalid": "Enter a date as YYYY-MM-DD, e.g. 2026-12-31."},
        validators=[
            MaxValueValidator(LAST_DAY, message="Enter a date before 9999-12-31."),
        ],
    )


class AsOfForm(forms.Form):
    as_of = _day_field("As of", "The books at the end of this day. Empty: today.")


class JournalFilterForm(forms.Form):
    since = _day_field("From")
    until = _day_field("To", "Both days included; by the day a transaction is effective.")

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and until < since:
            self.add_error("until", "The end date is before the start date.")
        return data


class _AsOfMixin:
    def as_of(self, form: AsOfForm) -> date:
        return form.cleaned_data.get("as_of") or self.today()

    def before(self, day: date) -> datetime:
        return self.landlord.day_start(day + timedelta(days=1))


class LedgerView(_AsOfMixin, StaffView):
    """The trial balance at the end of a day, the chain head and its last check; a POST
    checks the chain now (finance, managers and owners)."""

    def required_permission(self, request) -> str:
        return Permission.EXPORT if request.method == "POST" else Permission.VIEW

    def post(self, request):
        # The check reads the whole ledger: a worker does it, not this request.
        if selectors.ledger_check_recently_requested(landlord=self.landlord, now=timezone.now()):
            messages.info(request, "The chain was checked less than a minute ago; see below.")
        else:
            ledger_check.delay_on_commit(
                landlord_id=self.landlord.pk,
                kind=LedgerCheckKind.ON_DEMAND,
                requested_by_id=request.user.pk,
            )
            messages.success(
                request,
                "Check started: the outcome appears below when it is done, usually in seconds.",
            )
        return redirect("dashboard:ledger")

    def get(self, request):
        data = request.GET.copy()
        if not data.get("as_of"):  # show the day the balance is for
            data["as_of"] = self.today().isoformat()
        form = AsOfForm(data)
        context = {
            "form": form,
            "head": selectors.chain_head(landlord=self.landlord),
            "checks": selectors.ledger_check_status(landlord=self.landlord, now=timezone.now()),
        }
        if not form.is_valid():
            response = self.render("ledger/dashboard/ledger.html", **context)
            response.status_code = 400
            return response
        as_of = self.as_of(form)
        balance = selectors.trial_balance(landlord=self.landlord, before=self.before(as_of))
        return self.render(
            "ledger/dashboard/ledger.html",
            as_of=as_of,
            balance=balance,
            lines=_by_currency(balance),
            **context,
        )


def _by_currency(balance: selectors.TrialBalance) -> list[tuple[str, list, int, int]]:
    """(currency, lines, debit total, credit total) per currency."""
    grouped: dict[str, list] = {}
    for line in balance.lines:
        grouped.setdefault(line.currency, []).append(line)
    return [
        (
            currency,
            lines,
            sum(line.debit for line in lines),
            sum(line.credit for line in lines),
        )
        for currency, lines in grouped.items()
    ]


class TrialBalanceCsvView(_AsOfMixin, StaffView):
    permission = Permission.EXPORT

    def get(self, request):
        form = AsOfForm(request.GET)
        if not form.is_valid():
            return bad_query(form.errors)
        as_of = self.as_of(form)
        balance = selectors.trial_balance(landlord=self.landlord, before=self.before(as_of))
        rows = [
            (
                as_of.isoformat(),
                line.currency,
                csv_text(line.code),
                line.kind,
                csv_amount(line.debit, line.currency),
                csv_amount(line.credit, line.currency),
                csv_amount(line.balance, line.currency),
            )
            for line in balance.lines
        ]
        return csv_download(
            filename=f"{self.landlord.slug}-trial-balance-{as_of.isoformat()}.csv",
            header=("as_of", "currency", "account", "kind", "debit", "credit", "balance"),
            rows=rows,
        )


class _JournalMixin:
    def journal_range(self, form: JournalFilterForm) -> tuple[datetime | None, datetime | None]:
        since, until = form.cleaned_data.get("since"), form.cleaned_data.get("until")
        return (
            self.landlord.day_start(since) if since else None,
            self.landlord.day_start(until + timedelta(days=1)) if until else None,
        )


class JournalView(_JournalMixin, StaffView):
    """Every transaction with its entries, newest first, by keyset pages."""

    def get(self, request):
        form = JournalFilterForm(request.GET)
        context = {"form": form, "head": selectors.chain_head(landlord=self.landlord)}
        if not form.is_valid():
            response = self.render("ledger/dashboard/journal.html", **context)
            response.status_code = 400
            return response
        since, until = self.journal_range(form)
        page = selectors.journal_page(
            landlord=self.landlord,
            since=since,
            until=until,
            older_than=whole_number(request.GET.get("older")),
            newer_than=whole_number(request.GET.get("newer")),
        )
        kept = {
            name: form.cleaned_data[name].isoformat()
            for name in ("since", "until")
            if form.cleaned_data.get(name)
        }
        return self.render(
            "ledger/dashboard/journal.html",
            page=page,
            query="&".join(f"{k}={v}" for k, v in kept.items()),
            filtered=bool(kept),
            **context,
        )


class JournalCsvView(_JournalMixin, StaffView):
    """One row per entry, in chain order, with the hashes that chain it."""

    permission = Permission.EXPORT

    def get(self, request):
        form = JournalFilterForm(request.GET)
        if not form.is_valid():
            return bad_query(form.errors)
        since, until = self.journal_range(form)
        tz = self.landlord.tz
        rows = selectors.journal_export_rows(landlord=self.landlord, since=since, until=until)
        header = (
            "seq",
            "transaction_id",
            "effective_at",
            "recorded_at",
            "reference",
            "description",
            "document_kind",
            "document_id",
            "reverses_seq",
            "entry_id",
            "account",
            "account_kind",
            "tenant_id",
            "tenant",
            "lease_id",
            "currency",
            "debit",
            "credit",
            "amount_minor",
            "hash",
            "prev_hash",
        )

        def formatted():
            for row in rows:
                (seq, txn_id, effective_at, recorded_at, reference, description, doc_kind,
                 doc_id, reverses_seq, entry_id, code, kind, tenant_id, tenant, lease_id,
                 currency, amount, digest, prev) = row  # fmt: skip
                yield (
                    seq,
                    txn_id,
                    effective_at.astimezone(tz).isoformat(),
                    recorded_at.astimezone(tz).isoformat(),
                    csv_text(reference),
                    csv_text(description),
                    doc_kind,
                    "" if doc_id is None else doc_id,
                    "" if reverses_seq is None else reverses_seq,
                    entry_id,
                    csv_text(code),
                    kind,
                    "" if tenant_id is None else tenant_id,
                    csv_text(tenant),
                    "" if lease_id is None else lease_id,
                    currency,
                    csv_amount(amount, currency) if amount > 0 else "",
                    csv_amount(-amount, currency) if amount < 0 else "",
                    amount,
                    digest,
                    prev,
                )

        label = "-".join(
            form.cleaned_data[n].isoformat() for n in ("since", "until") if form.cleaned_data[n]
        )
        return csv_download(
            filename=f"{self.landlord.slug}-journal{'-' + label if label else ''}.csv",
            header=header,
            rows=formatted(),
        )
