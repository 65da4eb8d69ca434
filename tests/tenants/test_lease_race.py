"""Two requests race to let the same unit for overlapping dates. No Python check can
see the other's uncommitted row; PostgreSQL can, so exactly one lease is stored and
the loser gets the same field error a form user would see."""

import threading
import time
from datetime import date

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, connections, transaction

from tenants import services
from tenants.models import Lease, LeaseStatus
from tests.factories import MembershipFactory, TenantFactory, UnitFactory

TIMEOUT = 10
ROUNDS = 10  # a race is timing-dependent; several rounds make a regression show up


def _someone_waits_for_a_lock() -> bool:
    """True once another backend of this test database is blocked on a lock."""
    with connection.cursor() as cursor:
        # Inside a transaction the statistics views are a snapshot: refresh it.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def _wait_until(condition, *, stop=lambda: False) -> bool:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return True
        if stop():
            return False
        time.sleep(0.005)
    return False


def race(attempts: list[dict]) -> list[object]:
    """Run one `lease_save` per attempt, each in its own thread, connection and
    transaction. The threads meet at a barrier inside their transactions, then save.
    A thread whose save returned keeps its transaction open until the rival is seen
    blocked on it (or has returned too), so the two writes overlap in time."""
    barrier = threading.Barrier(len(attempts), timeout=TIMEOUT)
    may_commit = threading.Event()
    returned = threading.Semaphore(0)
    results: list[object] = [None] * len(attempts)

    def run(index: int, kwargs: dict) -> None:
        try:
            with transaction.atomic():
                barrier.wait()
                try:
                    results[index] = services.lease_save(**kwargs)
                except ValidationError as exc:
                    results[index] = exc
                    return
                finally:
                    returned.release()
                may_commit.wait(TIMEOUT)
        except Exception as exc:  # reported by the assertions, not swallowed
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(attempts)]
    for thread in threads:
        thread.start()
    count = [0]

    def all_returned() -> bool:
        while returned.acquire(blocking=False):
            count[0] += 1
        return count[0] == len(attempts)

    _wait_until(lambda: count[0] and _someone_waits_for_a_lock(), stop=all_returned)
    may_commit.set()
    for thread in threads:
        thread.join(TIMEOUT)
    return results


@pytest.fixture
def world(transactional_db, other_landlord):
    membership = MembershipFactory(role="owner", landlord__default_currency="EUR")
    landlord = membership.landlord
    tenants = [TenantFactory(landlord=landlord), TenantFactory(landlord=landlord)]
    yield landlord, membership.user, tenants
    connections.close_all()


def attempt(world, unit, tenant, start, end=None) -> dict:
    landlord, actor, _ = world
    return {
        "landlord": landlord,
        "actor": actor,
        "tenants": [tenant],
        "unit": unit,
        "start_date": start,
        "end_date": end,
        "currency": "EUR",
        "billing_day": 1,
        "due_days": 0,
        "status": LeaseStatus.ACTIVE,
    }


@pytest.mark.django_db(transaction=True)
def test_an_overlapping_insert_waits_for_the_open_transaction_and_is_then_refused(world):
    landlord, _, (ann, _) = world
    unit = UnitFactory(property__landlord=landlord)
    first_inserted, second_outcome = threading.Event(), []

    def first() -> None:
        try:
            with transaction.atomic():
                Lease.objects.create(
                    landlord=landlord, unit=unit, currency="EUR", start_date=date(2026, 1, 1)
                )
                first_inserted.set()
                # Commit only once the second INSERT is blocked on this open transaction.
                _wait_until(_someone_waits_for_a_lock)
        finally:
            connection.close()

    def second() -> None:
        try:
            first_inserted.wait(TIMEOUT)
            with transaction.atomic():
                Lease.objects.create(
                    landlord=landlord, unit=unit, currency="EUR", start_date=date(2026, 6, 1)
                )
        except Exception as exc:
            second_outcome.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)

    assert len(second_outcome) == 1
    assert isinstance(second_outcome[0], IntegrityError)
    assert "lease_no_overlap_per_unit" in str(second_outcome[0])
    assert Lease.objects.filter(unit=unit).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_racing_overlapping_lease_saves_store_exactly_one(world):
    landlord, _, (ann, bob) = world

    for _ in range(ROUNDS):
        unit = UnitFactory(property__landlord=landlord)
        results = race(
            [
                attempt(world, unit, ann, date(2026, 1, 1)),
                attempt(world, unit, bob, date(2026, 3, 1), date(2026, 9, 1)),
            ]
        )

        saved = [r for r in results if isinstance(r, Lease)]
        refused = [r for r in results if isinstance(r, ValidationError)]
        assert len(saved) == 1, results
        assert len(refused) == 1, results
        assert refused[0].message_dict == {"start_date": [services.OVERLAP_MESSAGE]}
        assert list(Lease.objects.filter(unit=unit)) == saved


@pytest.mark.django_db(transaction=True)
def test_two_racing_back_to_back_lease_saves_are_both_stored(world):
    landlord, _, (ann, bob) = world
    unit = UnitFactory(property__landlord=landlord)

    results = race(
        [
            attempt(world, unit, ann, date(2026, 1, 1), date(2026, 7, 1)),
            attempt(world, unit, bob, date(2026, 7, 1)),
        ]
    )

    assert all(isinstance(r, Lease) for r in results), results
    assert Lease.objects.filter(unit=unit).count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_racing_lease_saves_on_different_units_are_both_stored(world):
    landlord, _, (ann, bob) = world
    units = [UnitFactory(property__landlord=landlord) for _ in range(2)]

    results = race(
        [
            attempt(world, units[0], ann, date(2026, 1, 1)),
            attempt(world, units[1], bob, date(2026, 1, 1)),
        ]
    )

    assert all(isinstance(r, Lease) for r in results), results
