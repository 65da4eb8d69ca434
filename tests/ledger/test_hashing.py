"""The canonical serialisation is part of every stored hash: it must never change."""

from datetime import UTC, datetime, timedelta, timezone

from ledger.hashing import EntryContent, chain_hash, content_hash
from ledger.models import GENESIS_HASH

RECEIVABLE = EntryContent("receivable", "EUR", 5, 119_000, "EUR", 5, 3, "invoice", 9)
INCOME = EntryContent("rent_income", "EUR", None, -119_000, "EUR", 5, 3, "invoice", 9)
POSTING = {
    "idempotency_key": "invoice:9:issue",
    "effective_at": datetime(2026, 1, 1, tzinfo=UTC),
    "description": "Miete Jänner",
    "document_kind": "invoice",
    "document_id": 9,
    "reverses_key": None,
}


def test_version_1_content_hash_is_pinned():
    assert content_hash(entries=[RECEIVABLE, INCOME], **POSTING) == (
        "3f8c3274fb67854c32a5e1e186a9a084b10b0b20e95963a897b501471d201bc9"
    )


def test_entry_order_and_time_zone_do_not_change_the_hash():
    berlin = timezone(timedelta(hours=1))
    same_instant = {**POSTING, "effective_at": datetime(2026, 1, 1, 1, tzinfo=berlin)}
    assert content_hash(entries=[INCOME, RECEIVABLE], **same_instant) == content_hash(
        entries=[RECEIVABLE, INCOME], **POSTING
    )


def test_any_field_changes_the_hash():
    base = content_hash(entries=[RECEIVABLE, INCOME], **POSTING)
    assert content_hash(entries=[RECEIVABLE, INCOME], **{**POSTING, "description": "x"}) != base
    assert content_hash(entries=[RECEIVABLE, INCOME], **{**POSTING, "reverses_key": "k"}) != base
    moved = RECEIVABLE._replace(tenant_id=6)
    assert content_hash(entries=[moved, INCOME], **POSTING) != base


def test_the_chain_hash_binds_predecessor_and_position():
    digest = "a" * 64
    first = chain_hash(prev_hash=GENESIS_HASH, seq=1, content_hash=digest)
    assert chain_hash(prev_hash=GENESIS_HASH, seq=2, content_hash=digest) != first
    assert chain_hash(prev_hash=first, seq=1, content_hash=digest) != first
