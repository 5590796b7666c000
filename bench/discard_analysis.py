"""The paper's discard analysis on the tiny lab: SFT entries discarded / rescued against CT tokens.

Builds a lab (base, SFT, CT-ben with intermediate checkpoints of one run), merges every CT
checkpoint with the SFT by `ties` and `ties_sv`, reads each merge_report.json, evaluates each merge
on the first N documents of FLORES ben (bits per byte) and SIB-200 eng, and writes:

    OUT/analysis.json, OUT/discard_table.md, OUT/discard.png
    --docs DIR: DIR/discard.png, and the table between the markers of DIR/discard.md

Sized for a shared 2-core CPU (about 15-20 CPU-minutes with the defaults below; a second run reuses
every finished stage, merge and evaluation):

    OMP_NUM_THREADS=1 python bench/discard_analysis.py --out lab-out/discard --data-dir /work/shared/data \\
        --docs docs
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- discard-table:start -->", "<!-- discard-table:end -->"


def main(argv: list[str] | None = None) -> int:
    from registry.lab.build import LabConfig
    from registry.lab.discard import markdown_table, plot, run_analysis

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("lab-out/discard"))
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--docs", type=Path, help="also write DIR/discard.png and the table into DIR/discard.md")
    parser.add_argument("--base-steps", type=int, default=400)
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--ct-steps", type=int, default=320)
    parser.add_argument("--ct-save", default="20,40,80,160", help="intermediate CT steps (>= 3, below --ct-steps)")
    parser.add_argument("--density", type=float, default=0.2)
    parser.add_argument("--slack", type=float, default=0.1)
    parser.add_argument("--limit", type=int, default=200, help="documents per eval task (0: all)")
    parser.add_argument("--sib-shots", type=int, default=0, help="0-shot suits the tiny models (docs/lab.md)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    data_dir = args.data_dir if (args.data_dir / "manifest.json").is_file() else None
    if data_dir is None:
        print(f"warning: no data in {args.data_dir}: synthetic text, the numbers mean nothing", file=sys.stderr)
    config = LabConfig(
        languages=("ben_Beng",), base_steps=args.base_steps, sft_steps=args.sft_steps, ct_steps=args.ct_steps,
        ct_save_steps=tuple(int(s) for s in args.ct_save.split(",") if s.strip()),
    )  # fmt: skip
    started = time.process_time()
    analysis = run_analysis(
        args.out, config=config, data_dir=data_dir, density=args.density, slack=args.slack,
        limit=args.limit or None, sib_shots=args.sib_shots, tasks_dir=REPO / "recipes" / "tasks",
    )  # fmt: skip
    table = markdown_table(analysis)
    (args.out / "analysis.json").write_text(analysis.to_json(), encoding="utf-8")
    (args.out / "discard_table.md").write_text(table, encoding="utf-8")
    png = plot(analysis, args.out / "discard.png")
    if args.docs is not None:
        shutil.copy(png, args.docs / "discard.png")
        _splice(args.docs / "discard.md", table)
    print(table)
    print(f"CPU time of this process: {time.process_time() - started:.0f} s", file=sys.stderr)
    return 0


def _splice(doc: Path, table: str) -> None:
    """Put the table between the markers of `doc` (created with just the table when missing)."""
    text = doc.read_text(encoding="utf-8") if doc.is_file() else f"# Discard analysis\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    doc.write_text(f"{head}{START}\n{table}{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
