"""Print the corpus as a Markdown table: each kind of bad input, the command it was given
to, and the line a user sees (temporary paths shortened to ``…``). docs/reliability.md is
made with it:

    .venv/bin/python tests/corpus/table.py > /tmp/table.md
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from kinds import KINDS, Outcome, Workspace, make_workspace  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shared = make_workspace(root / "shared")
        print("| # | kind | command | exit | what the user sees |")
        print("|---|---|---|---|---|")
        for number, kind in enumerate(KINDS, 1):
            work = root / f"k{number}"
            work.mkdir()
            ws = Workspace(shared.volumes, shared.images, shared.run3, shared.run1,
                           shared.run_images, work)
            args = kind.build(ws)
            outcome = Outcome(args)
            line = " / ".join(outcome.lines).replace(str(root), "…").replace("|", "\\|")
            print(f"| {number} | {kind.name} | `{args[0]}` | {outcome.code} | {line} |")


if __name__ == "__main__":
    main()
