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
    from selenium.webdriver.common.by import By

    def find(css, root=None):
        return (root or browser).find_element(By.CSS_SELECTOR, css)

    browser.get(admin.url + "/admin")
    find("#token-input").send_keys(ADMIN_TOKEN)
    find("#token-submit").click()
    row_css = 'tr[data-schedule-id="feed-refresh"]'
    row = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, row_css), 15, "the schedules table")[0]
    assert "Every 15 minutes" in row.text and "disabled" in row.text
    assert "Missed Run Policy (SKIP)" in find("#policy-warning").text

    find(".toggle", row).click()
    wait_for(lambda: admin.db.fetch_one("get_schedule", id="feed-refresh")["enabled"] in (1, True), 15, "the enable to land")
    wait_for(lambda: "in " in find(row_css).text, 15, "the next run to show as 'in N minutes'")

    find(".run-now", find(row_css)).click()
    wait_for(lambda: "Schedule triggered: feed-refresh: 3 succeeded, 0 failed" in find("#result").text, 30, "the run result")
    history = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#history tbody tr"), 15, "the history")
    assert len(history) == 3 and all("COMPLETED" in r.text and "MANUAL" in r.text for r in history)
    runs = admin.db.fetch_all("list_runs", status="COMPLETED", schedule_id="feed-refresh", job_name=None, before=None, limit=10)
    assert len(runs) == 3

    find(".run-link", history[0]).click()
    wait_for(lambda: "feeds refreshed" in find("#logs pre").text, 15, "the run's log lines")
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
