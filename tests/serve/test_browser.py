"""The viewer end to end in a real browser: Playwright driving Debian's Chromium headless
(installed by .ci/run). Opens a detected case, scrolls, moves the threshold slider, clicks
a lesion row; screenshots go to ANODIFF_SCREENSHOTS (a folder) when it is set."""

import os
from pathlib import Path

import pytest
from browser import CHROMIUM, set_threshold, viewer_stats

from anodiff.serve.server import open_session, running

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                 "(pip install -e '.[dev]')")
if CHROMIUM is None:
    pytest.skip("no Chromium to drive: apt-get install chromium (.ci/run does)",
                allow_module_level=True)


def test_scroll_threshold_and_lesion_rows_in_chromium(viewer_run: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    run, data = viewer_run
    session = open_session(run, data, device="cpu")
    sick = next(c for c in session.index.all() if c.name == "sick")
    assert session.worker.submit(sick).done.wait(120)  # cached results, as a reopened case
    shots = Path(os.environ.get("ANODIFF_SCREENSHOTS", tmp_path))
    try:
        with running(session) as url, playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 800})
            page.goto(url)
            page.select_option("#case", sick.id)
            page.wait_for_function("() => window.anodiffViewer.stats.firstImageMs !== null")
            first = viewer_stats(page)
            assert first["overlayPixels"]["axial"] >= 0

            page.locator("#axial").hover()
            page.mouse.wheel(0, 120)
            page.wait_for_function(f"() => window.anodiffViewer.state.cursor[2] !== "
                                   f"{first['cursor'][2]}")

            low, high = (float(page.locator("#threshold").get_attribute(k))
                         for k in ("min", "max"))
            set_threshold(page, low + 0.05 * (high - low))
            loose = viewer_stats(page)["overlayPixels"]
            set_threshold(page, low + 0.95 * (high - low))
            strict = viewer_stats(page)
            assert sum(strict["overlayPixels"].values()) < sum(loose.values())

            page.locator("#lesions tbody tr").first.click()
            lesion = page.evaluate("() => window.anodiffViewer.state.meta.lesions[0].voxel")
            assert viewer_stats(page)["cursor"] == lesion
            set_threshold(page, low + 0.3 * (high - low))
            page.screenshot(path=str(shots / "viewer.png"))
            downloads = page.locator("#files a")
            assert downloads.count() >= 3
            browser.close()
    finally:
        session.close()
