"""The shop (examples/shop/) in a real headless Chromium: two app servers, a leader kill -9, a login.

Chromium and its driver come from Debian (`chromium`, `chromium-driver`), installed here
with apt-get when missing and possible; never a downloaded browser build. The test skips,
saying why, where they cannot be installed. Selenium drives Debian's chromedriver by path
(so Selenium Manager never downloads one). Screenshots of the key pages go to
SHOP_SCREENSHOTS_DIR (default: the test's tmp_path).

Cookies ignore ports, so app servers on localhost:A and localhost:B share the browser's
session cookie as two app servers behind one site name would. Chromium treats
http://localhost as a secure context, so the `__Host-` Secure cookie works without TLS.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import LEADER_TIMEOUT_S, ClusterFactory

pytestmark = pytest.mark.cluster

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
START_TIMEOUT_S = 30.0
PAGE_TIMEOUT_S = 10.0
COOKIE = "__Host-session"


def _install_chromium() -> str | None:
    """None when Chromium and its driver are there (installing them if needed), else why not."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return None
    if shutil.which("apt-get") is None:
        return "no Chromium, and no apt-get to install Debian's chromium and chromium-driver"
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"],
    ):
        done = subprocess.run([*sudo, *command], env=env, capture_output=True, check=False)
        if done.returncode != 0:
            return f"cannot install Chromium ({' '.join(command)}): {done.stderr.decode()[-300:]}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app server exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except OSError:
            time.sleep(0.1)  # polling a port that is not open yet
    pytest.fail(f"app server at {url} did not answer in {START_TIMEOUT_S} s:\n{log.read_text()[-2000:]}")


@pytest.fixture
def app_servers(tmp_path: Path) -> Iterator[Callable[[Path, int], str]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(cluster_dir: Path, n: int) -> str:
        port = _free_port()
        log = tmp_path / f"app{n}.log"
        env = {**os.environ, "SHOP_CLUSTER_DIR": str(cluster_dir), "SHOP_NAME": f"app server {n}"}
        command = [sys.executable, "-m", "uvicorn", "--factory", "examples.shop.app:from_environment"]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=out, stderr=out
            )
        started.append(process)
        url = f"http://localhost:{port}"
        _wait_http(url + "/", process, log)
        return url

    yield start
    for process in started:
        process.terminate()
    for process in started:
        process.wait(10)


@pytest.fixture
def browsers() -> Iterator[Callable[[], object]]:
    reason = _install_chromium()
    if reason is not None:
        pytest.skip(reason)
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    drivers: list[object] = []

    def make() -> object:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--window-size=1000,700",
        ):
            options.add_argument(argument)
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.quit()  # type: ignore[attr-defined]


def test_shop_in_chromium_across_app_servers_leader_kill_login_devices_checkout(
    make_cluster: ClusterFactory,
    app_servers: Callable[[Path, int], str],
    browsers: Callable[[], object],
    tmp_path: Path,
) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    shots = Path(os.environ.get("SHOP_SCREENSHOTS_DIR", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    cluster = make_cluster(3)
    server_a, server_b = app_servers(cluster.data_dir, 1), app_servers(cluster.data_dir, 2)
    laptop: object = browsers()
    browser = laptop  # typed loosely: selenium is an optional test dependency

    def go(driver: object, url: str) -> str:
        driver.get(url)  # type: ignore[attr-defined]
        return str(driver.find_element(By.TAG_NAME, "body").text)  # type: ignore[attr-defined]

    def body(driver: object) -> str:
        # The page may be replaced between finding <body> and reading it (a form's next page
        # arriving): read it again at the next poll (seen once in CI).
        try:
            return str(driver.find_element(By.TAG_NAME, "body").text)  # type: ignore[attr-defined]
        except WebDriverException:  # stale element, or "node does not belong to the document"
            return ""

    def wait_for(driver: object, done: Callable[[str], bool], what: str) -> str:
        # A click that submits a form may return before the next page is there.
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while not done(text := body(driver)):
            if time.monotonic() > deadline:
                pytest.fail(f"page never showed {what}; it shows:\n{text}")
            time.sleep(0.05)
        return text

    def click(driver: object, css: str, until: str) -> str:
        driver.find_element(By.CSS_SELECTOR, css).click()  # type: ignore[attr-defined]
        return wait_for(driver, lambda text: until in text, repr(until))

    def cookie(driver: object) -> str:
        found = driver.get_cookie(COOKIE)  # type: ignore[attr-defined]
        assert found is not None, "no session cookie in the browser"
        return str(found["value"])

    def shot(driver: object, name: str) -> None:
        driver.save_screenshot(str(shots / f"{name}.png"))  # type: ignore[attr-defined]

    go(browser, server_a + "/")
    click(browser, "#add-tea", "cart (1)")
    click(browser, "#add-mug", "cart (2)")
    shot(browser, "1-products-on-app-server-1")
    anonymous = cookie(browser)
    cart = go(browser, server_b + "/cart")
    assert "Green tea" in cart and "Blue mug" in cart, cart
    shot(browser, "2-cart-on-app-server-2")

    leader = cluster.wait_for_leader(LEADER_TIMEOUT_S)
    cluster.kill(leader)  # SIGKILL, mid-session
    go(browser, server_b + "/")
    click(browser, "#add-cake", "cart (3)")
    cart = go(browser, server_a + "/cart")
    assert "Lemon cake" in cart and "Green tea" in cart, cart
    shot(browser, "3-cart-after-leader-kill")

    go(browser, server_a + "/login")
    browser.find_element(By.NAME, "name").send_keys("alice")  # type: ignore[attr-defined]
    cart = click(browser, "#login", "signed in as alice")
    assert cookie(browser) != anonymous, "login must rotate the session token"
    assert "signed in as alice" in cart and "Lemon cake" in cart, cart
    shot(browser, "4-cart-after-login")

    phone = browsers()
    go(phone, server_b + "/login")
    phone.find_element(By.NAME, "name").send_keys("alice")  # type: ignore[attr-defined]
    click(phone, "#login", "signed in as alice")
    devices = go(browser, server_b + "/devices")
    assert "this device" in devices and devices.count("another device") == 1, devices
    shot(browser, "5-your-devices")
    items = browser.find_elements(By.CSS_SELECTOR, "#devices li")  # type: ignore[attr-defined]
    other = next(li for li in items if "another device" in li.text)
    other.find_element(By.CSS_SELECTOR, "button.revoke").click()
    wait_for(browser, lambda text: "another device" not in text, "the other device gone")
    assert "log in" in go(phone, server_a + "/"), "the revoked device must be logged out"

    go(browser, server_b + "/cart")
    done = click(browser, "#checkout", "Order of")
    assert "Order of 3 item(s) placed." in done, done
    shot(browser, "6-order-placed")
    bye = click(browser, "header button", "You are logged out.")
    assert "You are logged out." in bye, bye
    shot(browser, "7-logged-out")
    assert browser.get_cookie(COOKIE) is None  # type: ignore[attr-defined]
