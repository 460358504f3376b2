"""The web page in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``),
driven with Selenium: compare two uploaded images, draw on the pad, take a screenshot, and see
that a page under another name pointed at the service (DNS rebinding) gets no answers.

Outside CI a missing browser skips these tests; with ``CI`` set it fails them.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service_process import Service, ShapeFiles

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT_COPY = Path("/tmp/siamnet_page.png")
TIMEOUT = 20

#: A name the browser resolves to 127.0.0.1, as a rebinding attacker's domain would.
REBOUND_NAME = "rebind.example"

pytestmark = pytest.mark.slow


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_browser() -> None:
    """Skip (fail under CI) when Chromium, its driver or Selenium is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if not missing:
        return
    message = (
        f"the page test needs {', '.join(missing)}: apt-get install chromium chromium-driver; "
        "pip install selenium"
    )
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
        f"--host-resolver-rules=MAP {REBOUND_NAME} 127.0.0.1",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    yield driver
    driver.quit()


def wait_for(driver: Any, condition: Any, message: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, TIMEOUT).until(condition, message)


def text_of(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def api_compare(service: Service, a: Path, b: Path) -> dict[str, Any]:
    files = {"a": (a.name, a.read_bytes()), "b": (b.name, b.read_bytes())}
    return httpx.post(service.url + "compare", files=files, timeout=30).json()


def test_page_compares_two_uploaded_images(
    browser: Any, service: Service, shape_files: ShapeFiles, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    q = shape_files.queries
    browser.get(service.url)
    wait_for(browser, lambda d: "support: 4 classes" in text_of(d, "model-summary"), "no /info")

    browser.find_element(By.ID, "file-a").send_keys(str(q["bar0"]))
    browser.find_element(By.ID, "file-b").send_keys(str(q["bar1"]))
    wait_for(browser, lambda d: text_of(d, "compare-verdict") in ("same", "different"), "no score")
    expected = api_compare(service, q["bar0"], q["bar1"])
    assert text_of(browser, "compare-verdict") == "same" and expected["same"] is True
    assert float(text_of(browser, "compare-score")) == pytest.approx(expected["score"], abs=1e-4)

    browser.find_element(By.ID, "file-b").send_keys(str(q["ring0"]))
    wait_for(browser, lambda d: text_of(d, "compare-verdict") == "different", "no new verdict")
    expected = api_compare(service, q["bar0"], q["ring0"])
    assert float(text_of(browser, "compare-score")) == pytest.approx(expected["score"], abs=1e-4)
    assert text_of(browser, "compare-error") == ""

    draw_a_ring(browser)
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    shutil.copyfile(shot, SCREENSHOT_COPY)

    browser.find_element(By.ID, "clear").click()
    assert browser.find_elements(By.CSS_SELECTOR, "#ranking li") == []
    run_the_curl_lines(text_of(browser, "api-lines"), service, shape_files, tmp_path)


def run_the_curl_lines(shown: str, service: Service, shape_files: ShapeFiles, folder: Path) -> None:
    """The page's curl lines name the service's address and each, run as it is shown with the
    files it names, is answered 200 with the fields the API describes."""
    q = shape_files.queries
    names = {"one": "bar0", "two": "bar1", "query": "ring0", "q1": "cross0", "q2": "box1"}
    for name, query in names.items():
        shutil.copyfile(q[query], folder / f"{name}.png")
    lines = shown.splitlines()
    paths = ["compare", "embed", "classify", "classify", "search", "search", "info", "health"]
    assert [line.split("?")[0].split("/")[-1].rstrip('"') for line in lines] == paths
    expected = [
        "score",
        "embeddings",
        "ranking",
        "results",
        "matches",
        "results",
        "model",
        "status",
    ]
    for line, key in zip(lines, expected, strict=True):
        assert service.url in line, line
        done = subprocess.run(
            ["curl", "-sS", "--fail-with-body", *shlex.split(line)[1:]],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        assert key in json.loads(done.stdout), (line, done.stdout)


def draw_a_ring(browser: Any) -> None:
    """Draw on the pad; the page's ranking must be the service's ranking of the same drawing,
    with every class's support image shown."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    pad = browser.find_element(By.ID, "pad")
    chain = ActionChains(browser).move_to_element_with_offset(pad, 0, -70).click_and_hold()
    for dx, dy in [(50, 20), (20, 50), (-20, 50), (-50, 20), (-50, -20), (-20, -50), (20, -50)]:
        chain.move_by_offset(dx, dy)
    chain.move_by_offset(50, -20).release().perform()
    wait_for(
        browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#ranking li")) == 4, "no list"
    )

    shown = [
        li.get_attribute("data-class")
        for li in browser.find_elements(By.CSS_SELECTOR, "#ranking li")
    ]
    data_url = browser.execute_script(
        "return document.getElementById('pad').toDataURL('image/png')"
    )
    drawing = base64.b64decode(data_url.split(",", 1)[1])
    service_url = browser.current_url
    answer = httpx.post(
        service_url + "classify", files={"image": ("drawing.png", drawing)}, timeout=30
    ).json()
    assert shown == [row["name"] for row in answer["ranking"]]
    top = "unknown" if answer["unknown"] else answer["label"]
    assert text_of(browser, "classify-answer").startswith(top)
    loaded = browser.execute_script(
        "return [...document.querySelectorAll('#ranking img')]"
        ".map(img => img.complete && img.naturalWidth === 28)"
    )
    assert loaded == [True] * 4


def test_a_page_under_another_name_gets_no_answers(browser: Any, service: Service) -> None:
    from selenium.webdriver.common.by import By

    port = service.url.rsplit(":", 1)[1].rstrip("/")
    browser.get(f"http://localhost:{port}/")  # the page under a loopback name works
    wait_for(browser, lambda d: "support: 4 classes" in text_of(d, "model-summary"), "no /info")

    browser.get(f"http://{REBOUND_NAME}:{port}/")  # the same service, reached by another name
    body = browser.find_element(By.TAG_NAME, "body").text
    assert f"Host '{REBOUND_NAME}:{port}' is not a name this service answers to" in body
    status = browser.execute_script(
        "const r = new XMLHttpRequest(); r.open('GET', '/info', false); r.send();"
        "return [r.status, r.responseText];"
    )
    assert status[0] == 400 and "--allowed-host rebind.example" in status[1]
