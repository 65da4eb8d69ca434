"""The canonical serialisation is part of every stored hash: it must never change."""

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from ledger.hashing import EntryContent, _encode, chain_hash, content_hash, entry_json
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


_ids = st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(
    st.builds(
        EntryContent,
        st.text(),
        st.text(max_size=3),
        _ids,
        st.integers(),
        st.text(max_size=3),
        _ids,
        _ids,
        st.text(),
        _ids | st.booleans() | st.floats(allow_nan=False),
    )
)
def test_the_direct_entry_serialisation_is_the_encoders(entry):
    # Any string (quotes, backslashes, control characters, non-ASCII) and any field
    # type the fast path does not know must serialise exactly as the JSON encoder does.
    assert entry_json(entry) == _encode(entry)
