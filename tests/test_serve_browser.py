"""The service's page end to end in headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium): sign in, upload, wait, see the results, download. A screenshot of each
step goes to the test's folder (and to $SYNISTER_TEST_SCREENSHOTS when set)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from serve_support import Service, make_site, positions, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _browser_or_skip() -> None:
    if CHROMIUM.is_file() and CHROMEDRIVER.is_file():
        return
    message = (
        f"{CHROMIUM} or {CHROMEDRIVER} missing (as root: apt-get install -y chromium "
        "chromium-driver, or bash .ci/chromium.sh)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run the browser test")
    pytest.skip(message)


@pytest.fixture
def browser(tmp_path):
    _browser_or_skip()
    webdriver = pytest.importorskip("selenium.webdriver")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP reports land there
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    # an explicit driver path: Selenium Manager never runs (it would try to download one)
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(service=service, options=options)
    driver.downloads = downloads
    yield driver
    driver.quit()


def test_sign_in_upload_follow_and_download(browser, tmp_path, random_bundle):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    site = make_site(tmp_path / "site", random_bundle)
    table = tmp_path / "flywire_synapses.csv"
    positions(600, seed=7).to_csv(table, index=False)
    bad = tmp_path / "no_positions.csv"
    positions(10, seed=8).drop(columns=["z"]).to_csv(bad, index=False)
    service = Service(tmp_path / "service", site, workers=1).start()
    screens = tmp_path / "screens"
    screens.mkdir()
    shots: list[Path] = []

    def shot(name: str) -> None:
        path = screens / f"{len(shots) + 1:02d}_{name}.png"
        assert browser.save_screenshot(str(path))
        shots.append(path)

    def element(css: str):
        return browser.find_element(By.CSS_SELECTOR, css)

    def visible(css: str):
        found = browser.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found and found[0].is_displayed() else None

    def newest_job() -> dict | None:
        """The first row of the job table, read in one step (the page redraws rows)."""
        return browser.execute_script(
            "const r = document.querySelector('#jobs tbody tr');"
            "const bar = r && r.querySelector('progress');"
            "return r && {id: r.dataset.jobId, state: r.dataset.state, text: r.innerText,"
            " done: bar ? bar.value : null};"
        )

    def job_row(states):
        job = newest_job()
        return job if job and job["state"] in states else None

    def click(css: str) -> bool:
        try:
            browser.find_element(By.CSS_SELECTOR, css).click()
            return True
        except StaleElementReferenceException:  # redrawn meanwhile: find it again
            return False

    def click_result(name: str) -> bool:
        return click(f"#jobs tbody tr a[data-name='{name}']")

    try:
        token = service.token("alice")
        browser.get(service.base)
        wait_for(lambda: visible("#token"), 60, "the sign-in form")
        shot("sign_in")

        element("#token").send_keys("syn_000000000000_" + "a" * 43)
        element("#sign-in").click()
        wait_for(
            lambda: "not accepted" in element("#sign-in-message").text,
            60,
            "the refusal of a wrong token",
        )
        shot("wrong_token")

        element("#token").send_keys(token)
        element("#sign-in").click()
        wait_for(
            lambda: visible("#submit-section") and len(Select(element("#bundle")).options) == 2,
            60,
            "the submission form",
        )
        assert element("#user").text == "alice"
        assert token not in browser.current_url
        shot("signed_in")

        element("#table").send_keys(str(bad))
        element("#submit").click()
        wait_for(
            lambda: "no position columns" in element("#submit-message").text,
            60,
            "the table's error",
        )
        assert "no_positions.csv" in element("#submit-message").text
        offered = [o.get_attribute("value") for o in Select(element("#x-column")).options]
        assert visible("#columns-row") and offered == ["", "id", "pre_pt_root_id", "x", "y"]
        shot("bad_table_refused")
        element("#show-columns").click()  # hidden again: the next table's names are found
        wait_for(lambda: not visible("#columns-row"), 60, "the column choices to close")

        element("#table").send_keys(str(table))
        Select(element("#bundle")).select_by_value("slow")
        Select(element("#volume")).select_by_value("vol")
        element("#submit").click()
        wait_for(lambda: job_row({"queued", "running", "done"}), 60, "the job's row")
        assert "Queued flywire_synapses.csv: 600 positions" in element("#submit-message").text
        shot("submitted")

        def progressing():
            job = job_row({"running", "done"})
            return job and (job["state"] == "done" or job["done"] > 0)

        wait_for(progressing, 300, "the job to progress", interval=0.2)
        if job_row({"running"}):  # a fast machine may be done already
            shot("running")
        row = wait_for(lambda: job_row({"done"}), 300, "the job to be done", interval=0.2)
        assert "600 synapses" in row["text"]
        shot("done_with_results")

        wait_for(lambda: click_result("synapses.parquet"), 60, "a click on synapses.parquet")
        expected = browser.downloads / "flywire_synapses_synapses.parquet"
        wait_for(expected.is_file, 60, "the download")
        job_id = row["id"]
        with service.client(token) as client:
            served = client.get(f"/api/v1/jobs/{job_id}/results/synapses.parquet").content
        wait_for(lambda: expected.read_bytes() == served, 60, "the download to complete")
        assert len(pd.read_parquet(expected)) == 600

        wait_for(lambda: click_result("report"), 60, "a click on the report")
        wait_for(lambda: visible("#report-section"), 60, "the report")
        browser.switch_to.frame(element("#report"))
        wait_for(
            lambda: "600" in browser.find_element(By.TAG_NAME, "body").text,
            60,
            "the report's content",
        )
        # the report's own CSS applies in its sandboxed frame under the page's policy
        assert (
            browser.execute_script(
                "return getComputedStyle(document.querySelector('table')).borderCollapse"
            )
            == "collapse"
        )
        browser.switch_to.default_content()
        shot("report")
        wait_for(lambda: click(f"#jobs tbody tr[data-job-id='{job_id}'] button.delete"), 60,
                 "a click on Delete")  # fmt: skip
        browser.switch_to.alert.accept()  # "Delete the job of ... and its results?"
        wait_for(lambda: newest_job() is None, 60, "the job to be deleted")
        with service.client(token) as client:
            assert client.get(f"/api/v1/jobs/{job_id}").status_code == 404
        headers = service.client().get("/").headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        blocked = [
            e["message"] for e in browser.get_log("browser") if "Content Security" in e["message"]
        ]
        assert blocked == []
    except BaseException:
        shot("failure")
        raise
    finally:
        service.stop()
        target = os.environ.get("SYNISTER_TEST_SCREENSHOTS")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            for path in shots:
                shutil.copy(path, Path(target) / path.name)
    assert [p.name for p in shots][:3] == [
        "01_sign_in.png",
        "02_wrong_token.png",
        "03_signed_in.png",
    ]
