"""The built site in a real browser (headless Chromium through selenium), opened from disk: sorting a column
reorders the rows, a model page's charts load, and a model named like an HTML tag is shown as text and runs
nothing.

The browser is the system's (Debian's ``chromium`` and ``chromium-driver``): when they are not on PATH the session
fixture installs them with apt-get (as root), and selenium is given both paths, so it never downloads a browser
or a driver. The tests skip, saying why, only where no Chromium can be had.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from test_leaderboard import (
    SelfConsistentModel,
    WeakModel,
    add_ablation,
    place,
    planted_run,
)
from vrp_bench.leaderboard.build import build_leaderboard

XSS_NAME = "<img src=x onerror=window.__xss=1;alert(1)>"
APT_PACKAGES = ("chromium", "chromium-driver")


def _on_path() -> tuple[str, str] | None:
    """(browser, driver) on PATH, or None."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def _install() -> str | None:
    """Install Chromium and its driver with apt-get; None on success, else why not."""
    if shutil.which("apt-get") is None:
        return "chromium / chromedriver are not on PATH and there is no apt-get to install them"
    if os.geteuid() != 0:
        return f"chromium / chromedriver are not on PATH; as root: apt-get install -y {' '.join(APT_PACKAGES)}"
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", *APT_PACKAGES]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment, check=False)
        except subprocess.TimeoutExpired:
            return f"{' '.join(command)} did not finish in 15 minutes"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return f"{' '.join(command)} failed: {last}"
    return None


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium driven by selenium, with the system's browser and driver (installed if need be)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    paths = _on_path()
    if paths is None:
        problem = _install()
        paths = _on_path()
        if paths is None:
            pytest.skip(f"no headless Chromium: {problem or 'installed, but still not on PATH'}")
    binary, driver_path = paths
    options = webdriver.ChromeOptions()
    options.binary_location = binary  # with the driver's path below, selenium-manager is never asked for either
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A built board of three genuine runs: one of a model whose registered name is an HTML tag."""
    out, root = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("leaderboard")
    strong, weak = planted_run("strong", SelfConsistentModel, out / "a"), planted_run("weak", WeakModel, out / "b")
    add_ablation(strong, 0.3)
    add_ablation(weak, 0.9)
    place(strong, root, "strong")
    place(weak, root, "weak")
    place(planted_run(XSS_NAME, SelfConsistentModel, out / "c", seed=2), root, "xss")
    build_leaderboard(root, resamples=200)
    return root / "site"


def _column(browser, heading: str) -> list[str]:
    from selenium.webdriver.common.by import By

    headings = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#board thead th")]
    index = headings.index(heading)
    return [row.find_elements(By.TAG_NAME, "td")[index].get_attribute("data-value")
            for row in browser.find_elements(By.CSS_SELECTOR, "#board tbody tr")]


def _no_script_ran(browser) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    assert browser.execute_script("return window.__xss") is None
    with pytest.raises(NoAlertPresentException):
        _ = browser.switch_to.alert.text


def test_clicking_a_heading_sorts_the_rows(browser, site) -> None:
    from selenium.webdriver.common.by import By

    browser.get((site / "index.html").as_uri())
    names = _column(browser, "Model")
    assert _column(browser, "Band")[0] == "1" and names[-1] == "weak"  # primary order: SC AUROC, best first
    heading = next(th for th in browser.find_elements(By.CSS_SELECTOR, "#board thead th") if th.text == "p_tok AUROC")
    heading.click()
    ascending = [float(v) for v in _column(browser, "p_tok AUROC")]
    assert ascending == sorted(ascending) and _column(browser, "Model")[0] == "weak"
    assert heading.get_attribute("aria-sort") == "ascending"
    heading.click()
    assert [float(v) for v in _column(browser, "p_tok AUROC")] == sorted(ascending, reverse=True)
    rows = {tuple(row.text.split("\n")[:2]) for row in browser.find_elements(By.CSS_SELECTOR, "#board tbody tr")}
    assert len(rows) == 3  # rows moved whole


def test_a_model_page_opens_from_the_board_and_its_charts_load(browser, site) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get((site / "index.html").as_uri())
    browser.find_element(By.LINK_TEXT, "weak").click()
    WebDriverWait(browser, 20).until(lambda b: b.current_url.endswith("/models/weak.html")
                                     and b.execute_script("return document.readyState") == "complete")
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) >= 4 and any("ablation_layer" in i.get_attribute("src") for i in images)
    WebDriverWait(browser, 20).until(lambda b: all(b.execute_script("return arguments[0].complete", i) for i in images))
    widths = {i.get_attribute("src").rsplit("/", 1)[-1]: browser.execute_script("return arguments[0].naturalWidth", i)
              for i in images}
    assert all(width > 0 for width in widths.values()), widths
    browser.find_element(By.PARTIAL_LINK_TEXT, "the board").click()
    WebDriverWait(browser, 20).until(lambda b: b.current_url.endswith("/index.html"))


def test_a_model_named_like_a_tag_is_text_and_runs_nothing(browser, site) -> None:
    from selenium.webdriver.common.by import By

    browser.get((site / "index.html").as_uri())
    _no_script_ran(browser)
    assert browser.find_elements(By.CSS_SELECTOR, "#board img") == []
    link = browser.find_element(By.LINK_TEXT, XSS_NAME)  # the literal name, visible as text
    assert link.is_displayed() and link.get_attribute("href").endswith("/models/xss.html")
    browser.get((site / "models" / "xss.html").as_uri())
    _no_script_ran(browser)
    assert browser.find_element(By.TAG_NAME, "h1").text == XSS_NAME
    assert XSS_NAME in browser.title
