"""Speed and memory benchmark of riid: prints one Markdown table, writes it and JSON to --out.

    python benchmarks/bench.py [--checkpoint checkpoints] [--quick] [--out results/bench] [--threads N]

The same as ``riid bench``; see riid/bench.py for what each row measures.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from riid.bench import DEFAULT_OUT, run_bench
from riid.pipeline import DEFAULT_CHECKPOINT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="pipeline folder")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, single repetitions (a smoke run)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    args = parser.parse_args()
    run_bench(args.checkpoint, quick=args.quick, out=args.out, threads=args.threads)


if __name__ == "__main__":
    main()
