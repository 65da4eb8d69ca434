"""Reads over the ledger. Every balance in Rentledger is derived here from entries.

Signs follow the ledger: debit positive, credit negative. For a tenant that means a
positive balance is owed by the tenant and a negative one is credit held for them.
Every function is scoped to one landlord.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import (
    Case,
    Exists,
    F,
    OuterRef,
    Prefetch,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.functions import Coalesce

from ledger.hashing import EntryContent, chain_hash, content_hash
from ledger.models import (
    GENESIS_HASH,
    TENANT_ACCOUNT_CODES,
    Account,
    AccountCode,
    LedgerCheck,
    LedgerCheckKind,
    LedgerEntry,
    LedgerHead,
    LedgerTransaction,
)
from tenants.models import Landlord, Tenant

LOOKUP_CHUNK = 10_000
VERIFY_CHUNK = 2_000


def account_balance(*, account: Account) -> int:
    """Sum of the account's entries (debit positive), in the account's currency."""
    total = LedgerEntry.objects.filter(landlord_id=account.landlord_id, account=account).aggregate(
        total=Coalesce(Sum("amount_minor"), Value(0))
    )["total"]
    return int(total)


def _tenant_entries(*, landlord: Landlord, tenant: Tenant) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.for_landlord(landlord).filter(
        account__tenant=tenant, account__code__in=sorted(TENANT_ACCOUNT_CODES)
    )


def tenant_balance(
    *, landlord: Landlord, tenant: Tenant, currency: str | None = None
) -> dict[str, int]:
    """What the tenant owes per currency: receivable minus credit held for them.

    Positive: the tenant owes; negative: credit in the tenant's favour. Currencies
    without entries are absent (or 0 for an explicitly requested currency).
    """
    qs = _tenant_entries(landlord=landlord, tenant=tenant)
    if currency is not None:
        qs = qs.filter(currency=currency)
    totals = {
        row["currency"]: int(row["total"])
        for row in qs.values("currency").annotate(total=Sum("amount_minor")).order_by("currency")
    }
    if currency is not None:
        totals.setdefault(currency, 0)
    return totals


def document_balance(*, landlord: Landlord, document_kind: str, document_id: int) -> dict[str, int]:
    """Receivable still open on a document (e.g. what is owed on an invoice), per currency.

    The sum of receivable entries that name the document: the invoice's charge
    (debit) minus payments, credits and write-offs allocated to it (credits).
    """
    return document_balances(
        landlord=landlord, document_kind=document_kind, document_ids=[document_id]
    )[document_id]


def document_balances(
    *,
    landlord: Landlord,
    document_kind: str,
    document_ids: Iterable[int],
    before: datetime | None = None,
) -> dict[int, dict[str, int]]:
    """`document_balance` for many documents in one query (per 10,000 ids); with
    `before`, as they stood then (transactions effective before that moment).

    Every requested id is in the result; one without receivable entries maps to {}.
    """
    ids = sorted(set(document_ids))
    result: dict[int, dict[str, int]] = {doc_id: {} for doc_id in ids}
    entries = LedgerEntry.objects.for_landlord(landlord)
    if before is not None:
        entries = entries.filter(transaction__effective_at__lt=before)
    for start in range(0, len(ids), LOOKUP_CHUNK):
        rows = (
            entries.filter(
                document_kind=document_kind,
                document_id__in=ids[start : start + LOOKUP_CHUNK],
                account__code=AccountCode.RECEIVABLE,
            )
            .values("document_id", "currency")
            .annotate(total=Sum("amount_minor"))
            .order_by()
        )
        for row in rows:
            result[row["document_id"]][row["currency"]] = int(row["total"])
    return result


@dataclass(frozen=True)
class TrialBalanceLine:
    code: str
    kind: str
    currency: str
    debit: int
    credit: int  # positive number: the sum of credits

    @property
    def balance(self) -> int:
        return self.debit - self.credit


@dataclass(frozen=True)
class TrialBalance:
    """Debits and credits per account code (tenant accounts aggregated) and per currency."""

    lines: list[TrialBalanceLine]
    totals: dict[str, int]  # currency -> sum of all entries; 0 when the books balance

    @property
    def is_balanced(self) -> bool:
        return all(total == 0 for total in self.totals.values())


def trial_balance(*, landlord: Landlord, before: datetime | None = None) -> TrialBalance:
    """The landlord's trial balance; every currency's total must be 0. With `before`,
    only transactions effective before that moment (the books as they stood then; a
    transaction recorded later but backdated counts, as it does for the business)."""
    entries = LedgerEntry.objects.for_landlord(landlord)
    if before is not None:
        entries = entries.filter(transaction__effective_at__lt=before)
    rows = (
        entries.values("account__code", "account__kind", "currency")
        .annotate(
            debit=Coalesce(Sum(Case(When(amount_minor__gt=0, then=F("amount_minor")))), Value(0)),
            credit=Coalesce(Sum(Case(When(amount_minor__lt=0, then=-F("amount_minor")))), Value(0)),
        )
        .order_by("currency", "account__code")
    )
    lines = [
        TrialBalanceLine(
            code=row["account__code"],
            kind=row["account__kind"],
            currency=row["currency"],
            debit=int(row["debit"]),
            credit=int(row["credit"]),
        )
        for row in rows
    ]
    totals: dict[str, int] = defaultdict(int)
    for line in lines:
        totals[line.currency] += line.balance
    return TrialBalance(lines=lines, totals=dict(totals))


def transaction_list(
    *,
    landlord: Landlord,
    document_kind: str | None = None,
    document_id: int | None = None,
    tenant: Tenant | None = None,
) -> QuerySet[LedgerTransaction]:
    """The landlord's transactions in chain order, entries (with accounts) prefetched.

    `document_*` filters on the transaction's own document; `tenant` keeps
    transactions with at least one entry for that tenant.
    """
    qs = LedgerTransaction.objects.for_landlord(landlord)
    if document_kind is not None:
        qs = qs.filter(document_kind=document_kind)
    if document_id is not None:
        qs = qs.filter(document_id=document_id)
    if tenant is not None:
        qs = qs.filter(
            Exists(
                LedgerEntry.objects.filter(
                    landlord=landlord, transaction=OuterRef("pk"), tenant=tenant
                )
            )
        )
    entries = LedgerEntry.objects.select_related("account").order_by("pk")
    return qs.prefetch_related(Prefetch("entries", queryset=entries)).order_by("seq")


@dataclass(frozen=True)
class JournalPage:
    """One keyset page of the journal, newest first, and the cursors (chain positions)
    of the neighbouring pages: None at an end."""

    transactions: list[LedgerTransaction]
    older: int | None
    newer: int | None

    @property
    def has_other_pages(self) -> bool:
        return self.older is not None or self.newer is not None


def _journal(
    *, landlord: Landlord, since: datetime | None, until: datetime | None
) -> QuerySet[LedgerTransaction]:
    qs = LedgerTransaction.objects.for_landlord(landlord)
    if since is not None:
        qs = qs.filter(effective_at__gte=since)
    if until is not None:
        qs = qs.filter(effective_at__lt=until)
    return qs


def journal_page(
    *,
    landlord: Landlord,
    since: datetime | None = None,
    until: datetime | None = None,
    older_than: int | None = None,
    newer_than: int | None = None,
    size: int = 50,
) -> JournalPage:
    """Transactions effective in [since, until), in chain order from the newest, by
    keyset over `seq` (the (landlord, seq) unique index; no OFFSET, no COUNT(*)):
    `older_than` / `newer_than` are the `seq` cursors of `JournalPage`."""
    base = _journal(landlord=landlord, since=since, until=until)
    entries = LedgerEntry.objects.select_related("account", "tenant").order_by("pk")
    listing = base.select_related("reverses").prefetch_related(
        Prefetch("entries", queryset=entries)
    )
    if newer_than is not None:
        rows = list(listing.filter(seq__gt=newer_than).order_by("seq")[: size + 1])
        more_newer, rows = len(rows) > size, rows[:size][::-1]
        more_older = bool(rows) and base.filter(seq__lt=rows[-1].seq).exists()
    else:
        if older_than is not None:
            listing = listing.filter(seq__lt=older_than)
        rows = list(listing.order_by("-seq")[: size + 1])
        more_older, rows = len(rows) > size, rows[:size]
        more_newer = (
            older_than is not None and bool(rows) and base.filter(seq__gt=rows[0].seq).exists()
        )
    return JournalPage(
        transactions=rows,
        older=rows[-1].seq if rows and more_older else None,
        newer=rows[0].seq if rows and more_newer else None,
    )


def journal_export_rows(
    *, landlord: Landlord, since: datetime | None = None, until: datetime | None = None
) -> Iterable[tuple]:
    """Every entry of the transactions effective in [since, until), in chain order
    (seq, then entry id), as tuples: seq, transaction id, effective_at, recorded at,
    idempotency key, description, document kind and id, seq of the reversed transaction,
    entry id, account code and kind, tenant id and name, lease id, currency, signed
    amount, hash, prev_hash. Read in chunks
    through a server-side cursor, so a landlord's whole history streams in constant
    memory."""
    entries = LedgerEntry.objects.for_landlord(landlord)
    if since is not None:
        entries = entries.filter(transaction__effective_at__gte=since)
    if until is not None:
        entries = entries.filter(transaction__effective_at__lt=until)
    return (
        entries.order_by("transaction__seq", "pk")
        .values_list(
            "transaction__seq",
            "transaction_id",
            "transaction__effective_at",
            "transaction__created_at",
            "transaction__idempotency_key",
            "transaction__description",
            "transaction__document_kind",
            "transaction__document_id",
            "transaction__reverses__seq",
            "pk",
            "account__code",
            "account__kind",
            "tenant_id",
            "tenant__full_name",
            "lease_id",
            "currency",
            "amount_minor",
            "transaction__hash",
            "transaction__prev_hash",
        )
        .iterator(chunk_size=2_000)
    )


def chain_head(*, landlord: Landlord) -> LedgerHead:
    """The tip of the landlord's hash chain (seq 0 and the genesis hash before the
    first posting). Written down by an auditor, it lets a later export be checked to
    extend the books they saw rather than rewrite them."""
    head = LedgerHead.objects.filter(landlord=landlord).first()
    return head or LedgerHead(landlord=landlord, last_seq=0, last_hash=GENESIS_HASH)


@dataclass(frozen=True)
class CheckStatus:
    """What the Ledger page says about the chain's checks."""

    latest: LedgerCheck | None
    last_failure: LedgerCheck | None
    stale: bool  # the latest check is more than STALE_AFTER old


STALE_AFTER = timedelta(hours=36)
# On-demand checks of one landlord at most this often (each reads the whole ledger).
CHECK_EVERY = timedelta(minutes=1)


def ledger_check_status(*, landlord: Landlord, now: datetime) -> CheckStatus:
    """The latest check, the latest failure (kept whatever came after it) and whether
    the checks have stopped."""
    checks = LedgerCheck.objects.for_landlord(landlord).order_by("-checked_at", "-pk")
    latest = checks.first()
    return CheckStatus(
        latest=latest,
        last_failure=checks.filter(ok=False).first(),
        stale=latest is not None and latest.checked_at < now - STALE_AFTER,
    )


def ledger_check_recently_requested(*, landlord: Landlord, now: datetime) -> bool:
    """An on-demand check recorded within `CHECK_EVERY` (throttles the page's button)."""
    return (
        LedgerCheck.objects.for_landlord(landlord)
        .filter(kind=LedgerCheckKind.ON_DEMAND, checked_at__gt=now - CHECK_EVERY)
        .exists()
    )


def landlord_ids_to_check() -> list[int]:
    """Every landlord, for the nightly checks."""
    return list(Landlord.objects.order_by("pk").values_list("pk", flat=True))


def tenant_statement(*, landlord: Landlord, tenant: Tenant) -> QuerySet[LedgerEntry]:
    """The tenant's receivable and credit entries, oldest first, with a running balance.

    Each entry carries `effective_at`, `seq`, `description`, `transaction_key` (the
    posting's idempotency key), `reversed_by_seq` (the seq of the posting that reversed
    it, or None) and `running_balance` (per currency, debit positive = owed)
    annotations; ordered by effective_at, seq.
    """
    order = [F("transaction__effective_at").asc(), F("transaction__seq").asc(), F("pk").asc()]
    return (
        _tenant_entries(landlord=landlord, tenant=tenant)
        .select_related("account")
        .annotate(
            effective_at=F("transaction__effective_at"),
            seq=F("transaction__seq"),
            description=F("transaction__description"),
            transaction_key=F("transaction__idempotency_key"),
            reversed_by_seq=Subquery(
                LedgerTransaction.objects.filter(reverses=OuterRef("transaction_id")).values("seq")[
                    :1
                ]
            ),
            running_balance=Window(
                Sum("amount_minor"), partition_by=[F("currency")], order_by=order
            ),
        )
        .order_by(*order)
    )


# --- verification -------------------------------------------------------------------


@dataclass(frozen=True)
class ChainBreak:
    """The first place where the stored ledger disagrees with its recomputation."""

    seq: int
    transaction_id: int | None
    reason: str
    expected_hash: str = ""
    stored_hash: str = ""


@dataclass
class VerifyResult:
    landlord_id: int
    landlord_slug: str
    transactions_checked: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    chain_break: ChainBreak | None = None
    unbalanced_currencies: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.chain_break is None and not self.unbalanced_currencies


def _entries_by_transaction(txn_ids: list[int]) -> dict[int, list[EntryContent]]:
    grouped: dict[int, list[EntryContent]] = defaultdict(list)
    rows = LedgerEntry.objects.filter(transaction_id__in=txn_ids).values_list(
        "transaction_id",
        "account__code",
        "account__currency",
        "account__tenant_id",
        "amount_minor",
        "currency",
        "tenant_id",
        "lease_id",
        "document_kind",
        "document_id",
    )
    for txn_id, *values in rows.iterator(chunk_size=10_000):
        grouped[txn_id].append(EntryContent(*values))
    return grouped


def _check_transaction(
    row: dict, entries: list[EntryContent], *, expected_seq: int, prev_hash: str
):
    seq = row["seq"]
    if seq != expected_seq:
        return ChainBreak(
            seq, row["id"], f"seq {seq} where {expected_seq} was expected (gap or reorder)"
        )
    if row["prev_hash"] != prev_hash:
        return ChainBreak(
            seq,
            row["id"],
            "prev_hash is not the previous transaction's hash",
            prev_hash,
            row["prev_hash"],
        )
    totals: dict[str, int] = defaultdict(int)
    for entry in entries:
        totals[entry.currency] += entry.amount_minor
    if len(entries) < 2 or any(totals.values()):
        reason = f"entries do not balance: {dict(totals)} over {len(entries)} entries"
        return ChainBreak(seq, row["id"], reason)
    digest = content_hash(
        idempotency_key=row["idempotency_key"],
        effective_at=row["effective_at"],
        description=row["description"],
        document_kind=row["document_kind"],
        document_id=row["document_id"],
        reverses_key=row["reverses__idempotency_key"],
        entries=entries,
    )
    expected = chain_hash(prev_hash=prev_hash, seq=seq, content_hash=digest)
    if digest != row["content_hash"] or expected != row["hash"]:
        return ChainBreak(seq, row["id"], "content does not match its hash", expected, row["hash"])
    return None


def ledger_verify(*, landlord: Landlord) -> VerifyResult:
    """Recompute the landlord's hash chain, per-transaction balances and trial balance.

    Reads in chunks of 2,000 transactions; stops at the first break. Also checks that
    the chain head row agrees with the last transaction. The head is read first and the
    chain checked up to it: postings that commit while the chunks are read (the chain
    keeps growing under a check) are left for the next check instead of looking like a
    head that disagrees with its chain.
    """
    result = VerifyResult(landlord_id=landlord.pk, landlord_slug=landlord.slug)
    prev_hash, expected_seq, last_seen = GENESIS_HASH, 1, 0
    head = LedgerHead.objects.filter(landlord=landlord).first()
    base = LedgerTransaction.objects.for_landlord(landlord).order_by("seq")
    if head is not None:
        base = base.filter(seq__lte=head.last_seq)
    while result.chain_break is None:
        rows = list(
            base.filter(seq__gt=last_seen).values(
                "id",
                "seq",
                "idempotency_key",
                "effective_at",
                "description",
                "document_kind",
                "document_id",
                "reverses__idempotency_key",
                "content_hash",
                "prev_hash",
                "hash",
            )[:VERIFY_CHUNK]
        )
        if not rows:
            break
        entries = _entries_by_transaction([row["id"] for row in rows])
        for row in rows:
            problem = _check_transaction(
                row, entries.get(row["id"], []), expected_seq=expected_seq, prev_hash=prev_hash
            )
            if problem is not None:
                result.chain_break = problem
                break
            prev_hash, expected_seq = row["hash"], row["seq"] + 1
            result.transactions_checked += 1
            result.last_seq, result.last_hash = row["seq"], row["hash"]
        last_seen = rows[-1]["seq"]

    if result.chain_break is None:
        head_seq, head_hash = (head.last_seq, head.last_hash) if head else (0, GENESIS_HASH)
        if (head_seq, head_hash) != (result.last_seq, result.last_hash):
            result.chain_break = ChainBreak(
                head_seq,
                None,
                f"chain head says seq {head_seq} but the last transaction is seq {result.last_seq}",
                result.last_hash,
                head_hash,
            )
    totals = trial_balance(landlord=landlord).totals
    result.unbalanced_currencies = {c: t for c, t in totals.items() if t}
    return result
