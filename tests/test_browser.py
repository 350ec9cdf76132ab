"""The example pages in a real browser: headless Chromium (Debian's chromium
and chromium-driver) driven by Selenium. The websocket echo page served by
uWSGI's websocket API and by Tornado, and the Django polls flow: the list,
the vote with its CSRF token, the results. A failing test leaves a
screenshot in build/screenshots/."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ROOT, Server, free_port, wait_port

SCREENSHOTS = ROOT / "build" / "screenshots"
QUESTION = "What is the best loop engine?"
# as root, without network: no sandbox, no GPU, and none of the lookups that would hang
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


@pytest.fixture
def browser(request, tmp_path: Path) -> Iterator[WebDriver]:
    """A fresh headless Chromium; on failure its screenshot goes to build/screenshots/<test>.png."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver", log_output=str(tmp_path / "chromedriver.log")))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shot = SCREENSHOTS / (request.node.name.replace("/", "_") + ".png")
            driver.save_screenshot(str(shot))
            print(f"\nscreenshot of the failing page ({driver.current_url}): {shot}")
        driver.quit()


def until(driver: WebDriver, condition, timeout: float = 10):
    return WebDriverWait(driver, timeout).until(condition)


def echo_log(driver: WebDriver) -> list[str]:
    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#log li")]


@pytest.mark.parametrize("served_by", ["uwsgi", "tornado"])
def test_the_echo_page_echoes_its_greeting_and_a_typed_message(uwsgi, browser, served_by):
    tornado_port = free_port()
    server = uwsgi(str(ROOT / "examples" / "websocket_echo.py"), "--master",
                   "--shared-socket", f"127.0.0.1:{tornado_port}",
                   env={"TORNADO_SOCKET": f"127.0.0.1:{tornado_port}"})
    port = server.port if served_by == "uwsgi" else tornado_port
    wait_port(port)
    browser.get(f"http://127.0.0.1:{port}/")
    assert browser.find_element(By.ID, "endpoint").text == f"ws://127.0.0.1:{port}/websocket"
    until(browser, lambda d: echo_log(d) == ["You said: Hello, world"])

    box = browser.find_element(By.ID, "message")
    box.clear()
    box.send_keys("typed in Chromium")
    browser.find_element(By.CSS_SELECTOR, "#form button").click()
    until(browser, lambda d: len(echo_log(d)) == 2)
    assert echo_log(browser) == ["You said: Hello, world", "You said: typed in Chromium"]


def django(uwsgi, tmp_path: Path) -> Server:
    return uwsgi(str(ROOT / "examples" / "django_project" / "wsgi.py"), socket_opt="--http11-socket",
                 env={"DJANGO_DB": str(tmp_path / "db.sqlite3")})


def open_question(browser: WebDriver, server: Server) -> None:
    browser.get(server.url + "/polls/")
    browser.find_element(By.LINK_TEXT, QUESTION).click()
    until(browser, ec.title_is(QUESTION))


def vote(browser: WebDriver, choice: str) -> None:
    browser.find_element(By.XPATH, f"//label[text()='{choice}']").click()
    browser.find_element(By.CSS_SELECTOR, "input[type=submit][value=Vote]").click()
    until(browser, ec.url_contains("/results/"))


def results(browser: WebDriver) -> list[str]:
    return [li.text for li in browser.find_elements(By.CSS_SELECTOR, "ul li")]


def test_the_polls_list_links_the_question_to_its_voting_form(uwsgi, browser, tmp_path):
    server = django(uwsgi, tmp_path)
    browser.get(server.url + "/polls/")
    assert browser.title == "Polls"
    links = browser.find_elements(By.CSS_SELECTOR, "ul li a")
    assert [a.text for a in links] == [QUESTION]
    links[0].click()
    until(browser, ec.title_is(QUESTION))
    labels = [label.text for label in browser.find_elements(By.CSS_SELECTOR, "form label")]
    assert labels == ["tornado", "gevent", "asyncio"]


def test_a_vote_in_the_browser_carries_the_csrf_token_and_shows_the_results(uwsgi, browser, tmp_path):
    server = django(uwsgi, tmp_path)
    open_question(browser, server)
    token = browser.find_element(By.NAME, "csrfmiddlewaretoken").get_attribute("value")
    assert token and browser.get_cookie("csrftoken")
    vote(browser, "tornado")
    assert re.fullmatch(re.escape(server.url) + r"/polls/\d+/results/", browser.current_url)
    assert browser.title == f"Results: {QUESTION}"
    assert results(browser) == ["tornado -- 1 vote", "gevent -- 0 votes", "asyncio -- 0 votes"]


def test_the_results_page_links_back_to_the_form_and_counts_a_second_vote(uwsgi, browser, tmp_path):
    server = django(uwsgi, tmp_path)
    open_question(browser, server)
    vote(browser, "tornado")
    browser.find_element(By.LINK_TEXT, "Vote again?").click()
    until(browser, ec.title_is(QUESTION))
    vote(browser, "asyncio")
    assert results(browser) == ["tornado -- 1 vote", "gevent -- 0 votes", "asyncio -- 1 vote"]
