import pytest

from billing_site.celery import app as celery_app
from tests.factories import LandlordFactory, LeaseFactory, MembershipFactory


@pytest.fixture
def landlord(db):
    return LandlordFactory(
        name="Acme Lettings", slug="acme", timezone="Europe/Berlin", default_currency="EUR"
    )


@pytest.fixture
def other_landlord(db):
    """Landlord B with similar data: a query that forgets its scope shows B's rows."""
    other = LandlordFactory(
        name="Brightside Homes",
        slug="brightside",
        timezone="America/New_York",
        default_currency="USD",
    )
    LeaseFactory.create_batch(2, unit__property__landlord=other)
    return other


@pytest.fixture
def owner(landlord, other_landlord):
    return MembershipFactory(landlord=landlord, role="owner").user


@pytest.fixture
def staff_client(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture(autouse=True)
def _files_under_tmp(settings, tmp_path_factory):
    """Files a test writes (cached invoice PDFs, SMS) go to a directory of its own, not to
    the checkout's `.data/`, which `make run` serves: test documents and messages would
    pile up among the demo's, and a test could read a file an earlier run left."""
    files = tmp_path_factory.mktemp("files")
    settings.MEDIA_ROOT = str(files / "media")
    settings.SMS_FILE_PATH = str(files / "sms" / "outbox.jsonl")


@pytest.fixture(autouse=True)
def _celery_runs_inline():
    """Unit tests run tasks inline (after commit, like the real thing); the Celery path
    with a real worker and Redis is exercised by the fault test.

    Celery loads its configuration lazily: reading a setting first makes sure Django's
    CELERY_* settings are already applied, so they cannot overwrite this later.
    """
    celery_app.finalize()
    saved = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = saved
