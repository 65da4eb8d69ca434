"""Browser tests: Playwright (sync API, pytest-playwright) against pytest-django's live_server.

Runs Debian's Chromium (never `playwright install`). Screenshots go to test-artifacts/.
"""

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

# Playwright's sync API runs an event loop in this thread; Django's ORM would refuse
# to run next to it without this. `make test` sets it too.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DEMO_PASSWORD = "rentledger-demo"
PASSWORD_FACTORY = "correct-horse-battery-staple"  # tests.factories.PASSWORD
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
# Generous for a loaded 2-core machine; a passing test never waits for these.
TIMEOUT_MS = 10_000
expect.set_options(timeout=TIMEOUT_MS)


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.browser)
            # WhiteNoise warns when `collectstatic` has not run yet; the live server
            # serves static files from the finders anyway.
            item.add_marker(pytest.mark.filterwarnings("ignore:No directory at:UserWarning"))


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": "/usr/bin/chromium",
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, **DESKTOP, "locale": "en-GB"}


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def base_url(live_server) -> str:
    """Relative URLs in page.goto() and expect(...).to_have_url() go to the live server."""
    return live_server.url


@pytest.fixture
def app(live_server, page):
    """A page on the live server that fails in seconds instead of waiting 30 s."""
    page.set_default_timeout(TIMEOUT_MS)
    return page


def log_in(page, email: str, password: str = DEMO_PASSWORD) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/app/$"))


def assert_styled(page) -> None:
    """The stylesheet loaded (served by the live server's static handler)."""
    expect(page.locator("header.topbar")).to_have_css("background-color", "rgb(31, 78, 121)")


def assert_no_horizontal_overflow(page) -> None:
    """Nothing sticks out sideways (the classic phone-layout bug)."""
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{page.url} is {overflow}px wider than the viewport"


@pytest.fixture
def open_phone(browser, base_url):
    """open_phone(storage_state=None) -> a page in a fresh 390x844 touch context."""
    contexts = []

    def open_page(storage_state=None):
        context = browser.new_context(
            base_url=base_url, locale="en-GB", storage_state=storage_state, **PHONE
        )
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()
