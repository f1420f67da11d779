"""Make a dataset folder whose validation split comes from another scanner (issue 18: the
operating point calibrated on a site's own healthy scans).

Run: ``.venv/bin/python benchmarks/site_validation.py --track runs/synth/shift
--site runs/site_shift/shift --out runs/shift_site``. The new folder links the track's
train and test case folders (never copies or changes them) and takes as its ``val`` split
the *healthy test* cases of the site build (another seed of the same generator, acquired
on the shifted scanners), copied under new names ``site-NNNN`` so that no name clashes
with a case of the track. Validation cases are only used to place the deployable
threshold, so the models and test cases stay exactly those of the track.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def site_validation(track: Path, site: Path, out: Path) -> list[str]:
    """Build ``out``; return the names of the validation cases."""
    out.mkdir(parents=True, exist_ok=False)
    rows = []
    for line in (track / "splits.csv").read_text().splitlines()[1:]:
        case, split = line.split(",")
        if split != "val":
            (out / case).symlink_to((track / case).resolve())
            rows.append(f"{case},{split}")
    cases = json.loads((site / "stats.json").read_text())["cases"]
    healthy = [c["case"] for c in cases if c["split"] == "test" and not c["lesion"]]
    names = []
    for case in healthy:
        name = "site-" + case.rsplit("-", 1)[1]
        (out / name).mkdir()
        for file in (site / case).iterdir():
            shutil.copy(file, out / name / file.name.replace(case, name))
        rows.append(f"{name},val")
        names.append(name)
    (out / "splits.csv").write_text("case,split\n" + "\n".join(sorted(rows)) + "\n")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--track", type=Path, required=True)
    parser.add_argument("--site", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    names = site_validation(args.track, args.site, args.out)
    print(f"{args.out}: val = {', '.join(names)} (healthy, from {args.site})")


if __name__ == "__main__":
    main()
