r"""Time the viewer in headless Chromium on one case of the embedded benchmark (issue 24):
the first image after opening a case with cached results, and the redraw after a threshold
change, as the page measures them (performance.now() around its own drawing); and save the
screenshot the README shows.

    .venv/bin/python benchmarks/viewer.py RUN runs/synth/tumour \
        --out benchmarks/results/viewer.csv --screenshot docs/figures/viewer.png

Needs Chromium (apt-get install chromium) and the dev extra (playwright).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "serve"))
from browser import CHROMIUM, set_threshold, viewer_stats  # noqa: E402

from anodiff.data.io import read_image  # noqa: E402
from anodiff.serve.server import open_session, running  # noqa: E402


def lesioned_test_case(data: Path) -> Path:
    """The first test case of ``data`` (splits.csv) with the largest lesion among the first
    ten: a case with something to look at."""
    rows = [line.split(",") for line in (data / "splits.csv").read_text().split()[1:]]
    cases = [data / case for case, split in rows if split == "test"][:10]
    return max(cases, key=lambda c: float((read_image(c / f"{c.name}_seg.nii.gz").array > 0)
                                          .sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path, help="a dataset folder of the embedded benchmark")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write")
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--changes", type=int, default=20, help="threshold changes timed")
    args = parser.parse_args()
    if CHROMIUM is None:
        sys.exit("no Chromium: apt-get install chromium")
    case = lesioned_test_case(args.data)
    session = open_session(args.run, case, device="cpu")
    (entry,) = session.index.all()
    start = time.perf_counter()
    assert session.worker.submit(entry).done.wait(3600)
    detect_seconds = time.perf_counter() - start
    try:
        with running(session) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 760})
            page.goto(url)
            page.wait_for_function("() => window.anodiffViewer.stats.firstImageMs !== null")
            first = viewer_stats(page)["firstImageMs"]
            low, high = (float(page.locator("#threshold").get_attribute(k))
                         for k in ("min", "max"))
            redraws = []
            for k in range(args.changes):
                set_threshold(page, low + (0.2 + 0.6 * k / args.changes) * (high - low))
                redraws.append(viewer_stats(page)["lastDrawMs"])
            page.locator("#lesions tbody tr").first.click()
            set_threshold(page, low + 0.25 * (high - low))
            if args.screenshot:
                page.screenshot(path=str(args.screenshot))
            shape = page.evaluate("() => window.anodiffViewer.state.meta.shape")
            browser.close()
    finally:
        session.close()
    row = {"case": case.name, "shape": "x".join(map(str, shape)),
           "detect_seconds": round(detect_seconds, 2), "first_image_ms": round(first, 1),
           "threshold_redraw_ms_median": round(statistics.median(redraws), 1),
           "threshold_redraw_ms_max": round(max(redraws), 1), "changes": len(redraws)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    print(row)


if __name__ == "__main__":
    main()
