"""The admin page driven in headless Chromium (Debian's chromium and chromedriver; nothing downloaded)."""

from __future__ import annotations

import os
import shutil
import tempfile

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
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


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
        return browser.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)", css)

    browser.get(admin.url + "/admin")
    find("#token-input").send_keys(ADMIN_TOKEN)
    find("#token-submit").click()
    row_css = 'tr[data-schedule-id="feed-refresh"]'
    [row] = wait_for(lambda: texts(row_css), 15, "the schedules table")
    assert "Every 15 minutes" in row and "disabled" in row
    assert "Missed Run Policy (SKIP)" in find("#policy-warning").text

    click(f"{row_css} .toggle")
    wait_for(lambda: admin.db.fetch_one("get_schedule", id="feed-refresh")["enabled"] in (1, True), 15, "the enable to land")
    wait_for(lambda: "in " in "".join(texts(row_css)), 15, "the next run to show as 'in N minutes'")

    click(f"{row_css} .run-now")
    wait_for(lambda: "Schedule triggered: feed-refresh: 3 succeeded, 0 failed" in "".join(texts("#result")), 30, "the run result")
    history = wait_for(lambda: len(texts("#history tbody tr")) == 3 and texts("#history tbody tr"), 15, "the history")
    assert all("COMPLETED" in r and "MANUAL" in r for r in history)
    runs = admin.db.fetch_all("list_runs", status="COMPLETED", schedule_id="feed-refresh", job_name=None, before=None, limit=10)
    assert len(runs) == 3

    click("#history tbody tr:first-child .run-link")
    wait_for(lambda: "feeds refreshed" in "".join(texts("#logs pre")), 15, "the run's log lines")
    assert admin.db.fetch_one("get_schedule", id="feed-refresh")["runCount"] == 1
    browser.save_screenshot(str(tmp_path / "admin-page.png"))
    assert ADMIN_TOKEN == browser.execute_script("return sessionStorage.getItem('scheduleAdminToken')")


def test_a_wrong_token_brings_the_sign_in_form_back(browser, admin):
    from selenium.webdriver.common.by import By

    browser.get(admin.url + "/admin")
    browser.find_element(By.CSS_SELECTOR, "#token-input").send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "#token-submit").click()
    wait_for(lambda: "not valid" in browser.find_element(By.CSS_SELECTOR, "#login-error").text, 15, "the error")
    assert browser.find_element(By.CSS_SELECTOR, "#login").is_displayed()
