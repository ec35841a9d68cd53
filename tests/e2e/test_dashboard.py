"""The dashboard in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium), on a real master started with
``--http 0`` and real workers running jobs."""

from __future__ import annotations

import gc
import os
import shutil
import time
from pathlib import Path

import pytest

import cwtx
from cwtx._secret import load_secret
from cwtx.client.status import query_status
from cwtx.master.web import url

from ..conftest import gated, spawn_twistd, wait_until

pytestmark = pytest.mark.e2e

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
#: A worker's name is whatever it says: the page must show it as text.
HOSTILE = "<img src=x onerror=document.title='owned'>"


def _browser():
    """A headless Chromium, or a skip (a failure where CI installs it)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium")
    if missing:
        how = "apt-get install chromium chromium-driver; pip install selenium"
        why = f"no {', '.join(missing)}: {how}"
        if os.environ.get("CWTX_REQUIRE_BROWSER"):
            pytest.fail(why)
        pytest.skip(why)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1500"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture
def browser():
    driver = _browser()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def dash_cluster(tmp_path_factory):
    """A master serving its dashboard on a free port, two workers of two slots
    each, and one more worker with a hostile name."""
    run_dir = tmp_path_factory.mktemp("dashboard")
    port_file = run_dir / "http.port"
    args = ["--http", "0", "--http-port-file", str(port_file)]
    with cwtx.local.allocate(2, run_dir=run_dir, slots=2, master_args=args) as c:
        wait_until(lambda: port_file.exists() and port_file.read_text().strip(), what="http port")
        hostile = spawn_twistd(
            "cw-worker",
            "--master",
            f"{c.host}:{c.port}",
            "--name",
            HOSTILE,
            log=run_dir / "hostile.log",
        )
        try:
            wait_until(
                lambda: HOSTILE in {w["name"] for w in c.status()["workers"]},
                what="the hostile worker to register",
            )
            yield c, int(port_file.read_text())
        finally:
            hostile.kill()
            hostile.wait(30)


def _text(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def poll(what: str, condition, timeout: float = 30.0):
    """``condition()``'s first truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception as e:  # the page may be between two refreshes
            value, last = None, e
        else:
            last = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what} ({last!r})"
        time.sleep(0.1)


def test_the_dashboard_shows_workers_charts_and_refreshes_while_jobs_run(
    dash_cluster, browser, tmp_path
):
    from selenium.webdriver.common.by import By

    cluster, http_port = dash_cluster
    status = query_status(cluster.host, cluster.port)
    assert status["http"] == f"http://127.0.0.1:{http_port}/"
    gate = tmp_path / "gate"
    ex = cwtx.ClusterExecutor(cluster.host, cluster.port)
    try:
        held = [ex.submit(gated, str(gate), i) for i in range(2)]  # two slots stay busy
        ref = ex.put(bytes(1_000_000))  # held at the master once a job names it
        assert ex.submit(len, ref).result(60) == 1_000_000
        quick = [ex.submit(time.sleep, 0.05) for _ in range(2000)]  # throughput meanwhile

        # Without the token: refused, and the page says why.
        browser.get(status["http"])
        assert "403 Forbidden: no token" in browser.find_element(By.TAG_NAME, "body").text
        # With it: the cookie takes over, and the token leaves the address bar.
        browser.get(url(status["http"], load_secret()))
        poll("the page", lambda: browser.find_element(By.ID, "workers"))
        assert "token" not in browser.current_url
        cookie = browser.get_cookie(f"cwtx_dashboard_{http_port}")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        workers = _text(browser, "#workers")
        assert "local-0" in workers and "local-1" in workers
        assert HOSTILE in workers and browser.title.startswith("cwtx master")  # shown, not run
        assert not browser.find_elements(By.CSS_SELECTOR, "#workers img")
        poll("two running jobs", lambda: int(_text(browser, "#totals td[data-key=running]")) >= 2)

        # The refresh: values change with no reload (a mark set now survives).
        browser.execute_script("window.cwtxMark = 42")
        first = int(_text(browser, "#totals td[data-key=completed]"))
        poll(
            "completed to change on the page",
            lambda: int(_text(browser, "#totals td[data-key=completed]")) > first,
        )
        assert browser.execute_script("return window.cwtxMark") == 42
        assert browser.execute_script("return document.body.dataset.refreshed")

        # The client's put data, until it drops its Ref.
        assert _text(browser, "#clients td[data-key=put_data]") == "1"
        assert _text(browser, "#clients td[data-key=put_bytes]").endswith(" KiB")
        assert _text(browser, "#clients td[data-key=function_bytes]") not in ("", "0 B")
        del ref
        gc.collect()  # (the free goes through the client's reactor thread)
        poll("the put data freed", lambda: _text(browser, "#clients td[data-key=put_data]") == "0")
        assert _text(browser, "#clients td[data-key=put_bytes]") == "0 B"

        # Three charts, each with lines of data points (a sample every 5 s).
        def charted():
            charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
            names = [c.get_attribute("data-chart") for c in charts]
            lines = browser.find_elements(By.CSS_SELECTOR, "svg.chart polyline")
            counts = [int(line.get_attribute("data-points")) for line in lines]
            points = [len(line.get_attribute("points").split()) for line in lines]
            return (
                names == ["throughput", "queued", "busy"]
                and min(counts) >= 2
                and (counts == points)
            )

        poll("three charts with two samples or more", charted, timeout=40)
        line = browser.find_element(By.CSS_SELECTOR, "svg[data-chart=throughput] polyline")
        heights = [float(p.split(",")[1]) for p in line.get_attribute("points").split()]
        # Some sample above the zero line (y=120): jobs were completing.
        # (Not the last one: the short jobs may all have ended before it.)
        assert min(heights) < 120, heights
        shot = os.environ.get("CWTX_DASHBOARD_SCREENSHOT") or str(tmp_path / "dashboard.png")
        browser.save_screenshot(shot)
        assert Path(shot).stat().st_size > 10_000

        # status.json with the cookie, as the page's own requests have it.
        browser.get(status["http"] + "status.json")
        assert '"history"' in browser.find_element(By.TAG_NAME, "body").text
        gate.touch()
        assert [f.result(60) for f in held] == [0, 1]
        del quick
    finally:
        gate.touch()
        ex.shutdown(wait=True, cancel_futures=True, kill_running=True)
