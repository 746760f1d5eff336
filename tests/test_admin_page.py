"""The admin page driven in headless Chromium (Debian's chromium and chromedriver; nothing downloaded)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.admin_client import ADMIN_TOKEN, AdminServer
from tests.conftest import wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Chromium is missing: apt-get install -y chromium chromium-driver")
        pytest.skip("Chromium is not installed (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: SCREENSHOT_DIR when set (to look at them), else the test's temporary directory."""
    directory = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def admin(database_url):
    server = AdminServer(database_url)
    yield server
    server.close()


def test_sign_in_toggle_run_now_and_read_history_and_logs(browser, admin, tmp_path):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def find(css, root=None):
        return (root or browser).find_element(By.CSS_SELECTOR, css)

    def click(css):
        """Click what `css` finds now; the table is re-rendered after every change, so look it up afresh."""

        def attempt():
            try:
                find(css).click()
                return True
            except (NoSuchElementException, StaleElementReferenceException):
                return False

        wait_for(attempt, 15, f"{css} to be clickable")

    def texts(css):
        """The text of every element `css` finds, read in one go (no stale references)."""
        return browser.execute_script("return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)", css)

    browser.get(admin.url + "/admin")
    find("#token-input").send_keys(ADMIN_TOKEN)
    find("#token-submit").click()
    row_css = 'tr[data-schedule-id="feed-refresh"]'
    [row] = wait_for(lambda: texts(row_css), 15, "the schedules table")
    assert "Every 15 minutes" in row and "disabled" in row
    assert "Missed Run Policy (SKIP)" in find("#policy-warning").text

    click(f"{row_css} .toggle")
    wait_for(
        lambda: admin.db.fetch_one("get_schedule", id="feed-refresh")["enabled"] in (1, True), 15, "the enable to land"
    )
    wait_for(lambda: "in " in "".join(texts(row_css)), 15, "the next run to show as 'in N minutes'")

    click(f"{row_css} .run-now")
    wait_for(
        lambda: "Schedule triggered: feed-refresh: 3 succeeded, 0 failed" in "".join(texts("#result")),
        30,
        "the run result",
    )
    shown = wait_for(
        lambda: len(texts("#run-now-runs tbody tr")) == 3 and texts("#run-now-runs tbody tr"), 15, "Run now's runs"
    )
    assert all("COMPLETED" in r for r in shown), "Run now shows its runs until they end"
    occurrence = wait_for(lambda: texts("#occurrences details.occurrence > summary"), 15, "the history by occurrence")
    assert (
        len(occurrence) == 1
        and occurrence[0].startswith("COMPLETED")
        and "MANUAL" in occurrence[0]
        and "3 runs" in occurrence[0]
    )
    runs = admin.db.fetch_all(
        "list_runs", status="COMPLETED", schedule_id="feed-refresh", job_name=None, before=None, limit=10
    )
    assert len(runs) == 3

    click("#occurrences details.occurrence > summary")
    jobs = wait_for(
        lambda: [t for t in texts("#occurrences details.occurrence table.jobs tbody tr") if t.strip()], 15, "its jobs"
    )
    assert len(jobs) == 3 and all("COMPLETED" in j for j in jobs)
    refresh_run = next(r for r in runs if r["jobName"] == "feed.refresh_feeds")
    click(f'details.job[data-run-id="{refresh_run["id"]}"] > summary')
    wait_for(lambda: "feeds refreshed" in "".join(texts("details.job[open] pre")), 15, "the run's log lines")
    assert admin.db.fetch_one("get_schedule", id="feed-refresh")["runCount"] == 1
    browser.save_screenshot(str(screenshot_dir(tmp_path) / "admin-page-run-now.png"))
    assert ADMIN_TOKEN == browser.execute_script("return sessionStorage.getItem('scheduleAdminToken')")


def test_a_wrong_token_brings_the_sign_in_form_back(browser, admin):
    from selenium.webdriver.common.by import By

    browser.get(admin.url + "/admin")
    browser.find_element(By.CSS_SELECTOR, "#token-input").send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "#token-submit").click()
    wait_for(lambda: "not valid" in browser.find_element(By.CSS_SELECTOR, "#login-error").text, 15, "the error")
    assert browser.find_element(By.CSS_SELECTOR, "#login").is_displayed()


def click_fresh(browser, css: str) -> None:
    """Click what `css` finds now: the page re-renders every few seconds, so a found element can go stale."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def attempt():
        try:
            browser.find_element(By.CSS_SELECTOR, css).click()
            return True
        except (NoSuchElementException, StaleElementReferenceException):
            return False

    wait_for(attempt, 15, f"{css} to be clickable")


def seed_occurrence(
    db, schedule_id: str, at: datetime, statuses: list[tuple[str, str]], log_line: str | None = None
) -> list[int]:
    """One cron occurrence at `at` with a run per (job, status); '*' SKIPPED is a skip record. Returns the run ids."""
    batch = None if statuses[0][0] == "*" else str(uuid.uuid4())
    ids = []
    for job_name, status in statuses:
        error = {
            "FAILED": f"Traceback (most recent call last):\nRuntimeError: {job_name} broke at {at:%H:%M}",
            "SKIPPED": "skipped: no schedule daemon was running (missed-run policy SKIP)",
        }.get(status)
        ids.append(
            db.insert(
                "insert_run",
                job_name=job_name,
                trigger="CRON",
                schedule_id=schedule_id,
                scheduled_for=at,
                batch_id=batch,
                attempt=1,
                status=status,
                worker_id=None,
                queued_at=None,
                started_at=None if job_name == "*" else at + timedelta(milliseconds=5),
                completed_at=at + timedelta(milliseconds=1500),
                duration_ms=None if job_name == "*" else 1495,
                error=error,
                now=at,
            )
        )
        if log_line:
            db.insert(
                "insert_log", run_id=ids[-1], created_at=at + timedelta(milliseconds=10), level="INFO", message=log_line
            )
    return ids


def test_the_operators_view_banner_strip_failures_grouped_history_and_auto_refresh(browser, admin, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    db = admin.db
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=6)
    pattern = ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED", "SKIPPED", "COMPLETED"]
    seeded = []  # oldest first: (status, run ids)
    for n in range(23):
        at = start + timedelta(minutes=15 * n)
        status = pattern[n % len(pattern)]
        if n == 21:  # two jobs, one failed: the occurrence FAILED
            runs = [("matching.update_match_scores", "COMPLETED"), ("feed.refresh_feeds", "FAILED")]
            status = "FAILED"
        else:
            runs = [("*", "SKIPPED")] if status == "SKIPPED" else [("feed.refresh_feeds", status)]
        seeded.append((status, seed_occurrence(db, "feed-refresh", at, runs, log_line=f"occurrence {n} log line")))
    db.insert(
        "register_worker",
        id="gone-daemon",
        worker_type="schedule_daemon",
        hostname="h",
        pid=1,
        now=datetime.now(timezone.utc) - timedelta(hours=1),
    )

    def texts(css):
        return browser.execute_script("return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)", css)

    def find(css):
        return browser.find_element(By.CSS_SELECTOR, css)

    browser.get(admin.url + "/admin")
    find("#token-input").send_keys(ADMIN_TOKEN + Keys.ENTER)  # the keyboard alone signs in
    row_css = 'tr[data-schedule-id="feed-refresh"]'
    wait_for(lambda: len(texts(f"{row_css} .occ")) == 20, 15, "the strip of 20 occurrences")

    banner = find("#banner").text
    assert (
        banner.startswith("Unhealthy") and "no live schedule daemon" in banner and "Schedule daemons: 0 live" in banner
    )
    assert find("#banner").get_attribute("role") == "status"

    strip = browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.dataset.status)", f"{row_css} .occ"
    )
    assert strip == [status for status, _ in seeded[-20:]], "oldest first, coloured by the occurrence's outcome"
    assert texts(f"{row_css} .last-outcome") == [seeded[-1][0]] == ["SKIPPED"]
    rows = [r for _, ids in seeded for r in ids]
    completed = (
        sum(1 for status, ids in seeded for _ in ids if status == "COMPLETED") + 1
    )  # the two-job one's first job
    assert texts(f"{row_css} .success-rate")[0].startswith(f"{round(completed / len(rows) * 100, 2)}%")

    # Focus the last failed cell, as Tab would, and read its tooltip in one script: no refresh in between.
    tab_index, shown, tip, label = browser.execute_script(
        """
        const cell = [...document.querySelectorAll(arguments[0])].pop();
        cell.focus();
        const tip = cell.querySelector('.tip');
        return [cell.tabIndex, getComputedStyle(tip).display !== 'none', tip.innerText, cell.getAttribute('aria-label')];
    """,
        f'{row_css} .occ[data-status="FAILED"]',
    )
    assert tab_index == 0 and shown and "RuntimeError: feed.refresh_feeds broke" in tip and "took 1.5 s" in tip
    assert label.startswith("FAILED")

    def hover_shows_the_tip():
        try:
            ActionChains(browser).move_to_element(find(f"{row_css} .occ:first-child")).perform()
            return find(f"{row_css} .occ:first-child .tip").is_displayed()
        except StaleElementReferenceException:
            return False

    wait_for(hover_shows_the_tip, 15, "the tooltip on hover")

    failures = texts("#failures tbody tr")
    failed_ids = [
        r["id"]
        for r in db.fetch_all("list_runs", status="FAILED", schedule_id=None, job_name=None, before=None, limit=10)
    ]
    assert len(failures) == len(failed_ids) and all(f"#{i}" in t for i, t in zip(failed_ids, failures))

    click_fresh(browser, f"{row_css} .history")
    two_jobs = seeded[21][1]
    key = wait_for(
        lambda: browser.execute_script(
            "const d = [...document.querySelectorAll('details.occurrence')].find(d => d.innerText.includes('2 runs'));"
            "return d && d.dataset.key"
        ),
        15,
        "the grouped history",
    )
    click_fresh(browser, f'details.occurrence[data-key="{key}"] > summary')
    jobs = wait_for(lambda: texts(f'details.occurrence[data-key="{key}"] table.jobs tbody tr'), 15, "its jobs")
    assert len(jobs) == 2 and "COMPLETED" in jobs[0] and "FAILED" in jobs[1]
    click_fresh(browser, f'details.job[data-run-id="{two_jobs[1]}"] > summary')
    wait_for(
        lambda: "occurrence 21 log line" in "".join(texts(f'details.job[data-run-id="{two_jobs[1]}"] pre')),
        15,
        "its log lines",
    )

    # Auto-refresh: a new failure shows up on its own; what was opened stays open.
    new_ids = seed_occurrence(
        db, "feed-refresh", start + timedelta(minutes=15 * 23), [("feed.refresh_feeds", "FAILED")]
    )
    wait_for(
        lambda: f"#{new_ids[0]}" in "".join(texts("#failures tbody tr:first-child")),
        20,
        "the refresh to show the new failure",
    )
    wait_for(
        lambda: (
            browser.execute_script(
                "return [...document.querySelectorAll(arguments[0])].map(e => e.dataset.status).pop()",
                f"{row_css} .occ",
            )
            == "FAILED"
        ),
        10,
        "the strip to end with the new failure",
    )
    still_open = "return [...arguments].map(css => document.querySelector(css).open)"
    assert browser.execute_script(
        still_open, f'details.occurrence[data-key="{key}"]', f'details.job[data-run-id="{two_jobs[1]}"]'
    ) == [True, True]
    assert "occurrence 21 log line" in "".join(texts(f'details.job[data-run-id="{two_jobs[1]}"] pre'))
    browser.execute_script("window.scrollTo(0, 0)")
    browser.execute_script("document.querySelector(arguments[0]).focus()", f"{row_css} .occ:last-child")
    browser.save_screenshot(str(screenshot_dir(tmp_path) / "admin-page-overview.png"))
    browser.execute_script("document.querySelector('#history').scrollIntoView()")
    browser.save_screenshot(str(screenshot_dir(tmp_path) / "admin-page-history.png"))


def test_run_now_shows_its_runs_while_they_run_and_until_they_end(browser, database_url, tmp_path):
    import re
    import signal
    import subprocess
    import sys

    from selenium.webdriver.common.by import By

    from tests.conftest import ROOT

    # A real admin server process: its jobs run in supervised children, which take their environment from it.
    log_path = tmp_path / "admin.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "admin_server.py")],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": database_url,
                "APP_ENV": "test",
                "SCHEDULES_MODULE": "tests.alert_app",
                "TEST_JOB_SECONDS": "3",
                "ADMIN_TOKEN": ADMIN_TOKEN,
                "PORT": "0",
            },
        )
    try:
        url = wait_for(
            lambda: re.search(r"listening on (http://[0-9.:]+)/admin", log_path.read_text()),
            30,
            "the admin server to listen",
        ).group(1)

        def texts(css):
            return browser.execute_script(
                "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)", css
            )

        browser.get(url + "/admin")
        browser.find_element(By.CSS_SELECTOR, "#token-input").send_keys(ADMIN_TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#token-submit").click()
        wait_for(lambda: texts('tr[data-schedule-id="flaky"] .run-now'), 15, "the schedules")
        click_fresh(browser, 'tr[data-schedule-id="flaky"] .run-now')
        [running] = wait_for(lambda: texts("#run-now-runs tbody tr"), 10, "the run to show while it runs")
        assert "flaky.work" in running and "RUNNING" in running
        assert texts("#result") == ["Running flaky..."]
        [done] = wait_for(
            lambda: [t for t in texts("#run-now-runs tbody tr") if "COMPLETED" in t], 20, "the run to end"
        )
        assert "flaky.work" in done and " s" in done  # with its duration
        wait_for(lambda: texts("#result") == ["Schedule triggered: flaky: 1 succeeded, 0 failed"], 10, "the answer")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
