"""End to end in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): the main story
through the console, on a real server (uvicorn on a free localhost port) over a test database.

Each role logs in through the form and its home is photographed (1280x800) into build/screenshots/,
or docs/screenshots/ with `make screenshots` (linked from the README);
a department loads data by its Excel template and watches the load finish, a partner sees its
scenario's review state, the provider department, three experts and the bureau
decide it in the browser, the partner watches a job's progress move without reloading, a customer
accepts its usage agreement, sees its usage, downloads its statement and watches a batch delivery's
progress, and the bureau confirms an anomaly case and sees the decision on its review statistics.

Without /usr/bin/chromium (or the playwright package) these tests skip with the reason; with
AUTHOPS_REQUIRE_SERVICES=1 (as in CI) they fail instead.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from authops.app import create_app
from authops.core.jobs import service as job_service
from authops.platform.products.models import ProductBatch
from tests.console.conftest import with_console
from tests.console.world import HOME_TITLE, build_world, filled_template
from tests.support.builders import PASSWORD
from tests.support.catalog import IDS, NAMES, PHONES
from tests.support.services import services_required

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Where the role screenshots go: build/screenshots (ignored by git) unless AUTHOPS_SCREENSHOTS names
# another folder; `make screenshots` refreshes the committed ones in docs/screenshots.
SCREENSHOTS = Path(os.environ.get("AUTHOPS_SCREENSHOTS")
                   or Path(__file__).resolve().parents[2] / "build" / "screenshots")
MAX_SCREENSHOT = 300 * 1024
WAIT_MS = 15_000  # how long a page may take to show what we wait for (not asserted)

# The role homes photographed: file name -> role of the home side.
HOMES = {"bureau": "bureau_admin", "provider": "provider_data_officer", "expert": "expert",
         "operator": "operator_admin", "partner": "partner_admin", "customer": "customer_admin",
         "auditor": "auditor"}

pytestmark = [pytest.mark.browser]
# The server and the test share one SQLite file (the console is the same on PostgreSQL: the TestClient
# tests run on both).
ON_SQLITE = pytest.mark.parametrize("db_settings", ["sqlite"], indirect=True)


def _need_browser() -> None:
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed (pip install -e '.[test]')"
    if problem is None:
        return
    if services_required():
        pytest.fail(problem + " and AUTHOPS_REQUIRE_SERVICES=1")
    pytest.skip(problem + "; set AUTHOPS_REQUIRE_SERVICES=1 to make this a failure")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(db_settings) -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(with_console(create_app(db_settings)), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:  # startup takes a moment; a failed start ends the thread
        if not thread.is_alive():
            pytest.fail("the console's server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join()


@pytest.fixture
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def story(session, db_settings):
    return build_world(session, db_settings)


def _login(page, base: str, username: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{base}/console/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/console/")


def _shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    assert 0 < path.stat().st_size < MAX_SCREENSHOT, f"{path} is {path.stat().st_size} bytes"


def _decide(page, base: str, case_id: int, decision: str, reasons: str, score: str | None = None) -> None:
    page.goto(f"{base}/console/scenarios/{case_id}")
    page.check(f"input[name=decision][value={decision}]")
    if score is not None:
        page.fill("#score", score)
    page.fill("#reasons", reasons)
    page.click("#review-h ~ form button[type=submit]")
    page.wait_for_selector("p.notice", timeout=WAIT_MS)


@pytest.mark.slow
@ON_SQLITE
def test_each_role_home_in_the_browser_with_screenshots(server, browser, story):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    for name, role in HOMES.items():
        _login(page, server, story.users[role].username)
        expect(page.locator("#todo-h")).to_be_visible()
        # The to-do list comes first on every home.
        assert page.locator("main section").first.get_attribute("aria-labelledby") == "todo-h"
        _shoot(page, f"home-{name}")
    page.context.clear_cookies()
    page.goto(f"{server}/console/disclosure")
    expect(page.locator("h1")).to_contain_text("信息公开")
    _shoot(page, "disclosure")
    # Keyboard: the first Tab lands on the skip link, which leads to the main content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    # The language switch.
    page.click("header.top a[lang=en]")
    expect(page.locator("h1")).to_contain_text("disclosure")
    # A tablet width: the navigation and tables still fit the screen (no sideways scrolling).
    page.set_viewport_size({"width": 768, "height": 1024})
    _login(page, server, story.users["customer_admin"].username)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


@pytest.mark.slow
@ON_SQLITE
def test_the_main_story_through_the_console(server, browser, story, session, db_settings, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sid = story.scenario.id

    # The department loads data by its Excel template; the load's progress shows live.
    _login(page, server, story.users["provider_data_officer"].username)
    page.locator("#res-h ~ table a").first.click()
    with page.expect_download() as download:
        page.click("#download-template")
    rows = [{"id_number": IDS[i], "name": NAMES[i], "phone": PHONES[i], "sex": "男", "paid": 30,
             "paid_on": "2025-03-31"} for i in range(2)]
    filled = tmp_path / "batch.xlsx"
    filled.write_bytes(filled_template(Path(download.value.path()).read_bytes(), rows))
    page.set_input_files("#file", str(filled))
    page.click("#up-h ~ form button[type=submit]")
    load = page.locator("#runs-h ~ table tbody tr").first
    expect(load).to_contain_text("排队中")
    page.evaluate("window.__marker = 'same page'")
    job_id = int(load.locator(".job-progress").get_attribute("id").removeprefix("job-"))
    assert job_service.run_job(db_settings, job_id, worker="browser-test") == "succeeded"
    expect(load.locator(".job-progress")).to_contain_text("已完成", timeout=WAIT_MS)
    assert page.evaluate("window.__marker") == "same page"  # no reload happened
    page.reload()
    expect(page.locator("#rows")).to_have_text("2")
    assert not [v for v in (*IDS, *NAMES, *PHONES) if v in page.content()]

    # The partner sees its application waiting for the department.
    _login(page, server, story.users["partner_engineer"].username)
    expect(page.locator("main")).to_contain_text(HOME_TITLE)
    page.get_by_role("link", name=story.scenario.number).first.click()
    expect(page.locator("#case-state")).to_have_text("数源部门初审中")

    # Three levels decide it in the browser, with reasons.
    _login(page, server, story.users["provider_data_officer"].username)
    _decide(page, server, sid, "approve", "字段已最小化，同意")
    for i, expert in enumerate(story.experts):
        _login(page, server, expert.username)
        _decide(page, server, sid, "approve", "", score=str(85 + i))
    _login(page, server, story.users["bureau_reviewer"].username)
    _decide(page, server, sid, "approve", "终审同意")
    expect(page.locator("#case-state")).to_have_text("已批准")

    _login(page, server, story.users["partner_engineer"].username)
    page.goto(f"{server}/console/scenarios/{sid}")
    expect(page.locator("#case-state")).to_have_text("已批准")
    expect(page.locator("ol.timeline")).to_contain_text("终审同意")

    # The partner's job: progress moves on the open page without a reload.
    token = job_service.claim(session, story.job_id, "browser-test-worker")
    job_service.heartbeat(session, story.job_id, token, progress=0.3, message="running")
    session.commit()
    page.goto(f"{server}/console/jobs")
    cell = page.locator(f"#job-{story.job_id} .state")
    expect(cell).to_contain_text("30%")
    page.evaluate("window.__marker = 'same page'")
    job_service.heartbeat(session, story.job_id, token, progress=0.8)
    session.commit()
    expect(cell).to_contain_text("80%", timeout=WAIT_MS)
    job_service.finish(session, story.job_id, token, result={"ok": True})
    session.commit()
    expect(cell).to_contain_text("已完成", timeout=WAIT_MS)
    assert page.evaluate("window.__marker") == "same page"  # no reload happened

    # The customer accepts its usage agreement's exact text, then sees its usage and downloads its statement.
    _login(page, server, story.users["customer_admin"].username)
    page.click(f"#todo-h ~ ul a[href='/console/agreements/{story.pending_agreement_id}']")
    expect(page.locator("#agreement-text")).not_to_be_empty()
    page.click("#accept")
    expect(page.locator("#accept")).to_have_count(0)
    expect(page.locator("main")).to_contain_text(story.users["customer_admin"].username)
    page.click("nav.main >> text=用量与账单")
    expect(page.locator("#usage-h")).to_contain_text("(3)")
    with page.expect_download() as download:
        page.click("#download-pdf")
    assert Path(download.value.path()).read_bytes().startswith(b"%PDF")
    # Its batch delivery's progress moves on the open page too.
    page.click("nav.main >> text=批量交付")
    batch = page.locator(f"#batch-{story.batch_id} .state")
    expect(batch).to_contain_text("排队中")
    job_id = session.get(ProductBatch, story.batch_id).job_id
    token = job_service.claim(session, job_id, "browser-test-worker")
    job_service.heartbeat(session, job_id, token, progress=0.5)
    session.commit()
    expect(batch).to_contain_text("50%", timeout=WAIT_MS)

    # The bureau confirms the anomaly case.
    _login(page, server, story.users["bureau_reviewer"].username)
    page.goto(f"{server}/console/anomalies")
    case = page.locator(f"#case-{story.anomaly_case_id}")
    case.locator("select[name=severity]").select_option("major")
    case.locator("textarea[name=reason]").first.fill("确认为批量试探")
    case.locator("button", has_text="确认异常").click()
    expect(page.locator(f"#case-{story.anomaly_case_id}")).to_have_count(0)
    expect(page.locator("main table")).to_contain_text("确认为批量试探")
    # The application it approved counts on this week's bar of the review statistics.
    page.click("nav.main >> text=审核统计")
    assert "1" in page.locator("svg[aria-label='每周办结的场景申请'] text").all_text_contents()


def test_screenshots_are_skipped_not_faked_without_chromium(monkeypatch):
    """The skip path itself: with no browser binary the test says why (or fails under CI's flag)."""
    monkeypatch.setattr("tests.console.test_console_browser.CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("AUTHOPS_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium is missing"):
        _need_browser()
    monkeypatch.setenv("AUTHOPS_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="AUTHOPS_REQUIRE_SERVICES=1"):
        _need_browser()
