"""Print the claims scoreboard of the shipped checkpoints (the README's "Claims of the notes").

    python scripts/claims.py                   # digits, with the model measurements
    python scripts/claims.py --dataset shapes --no-edges

Reads the precomputed studies in ``checkpoints/results/`` and the checkpoint cards, runs the
model measurements of :func:`analysis.claims.model_measurements` (cached in the user cache
folder; about half a minute per checkpoint the first time) and prints the markdown table of
:func:`analysis.claims.scoreboard`, then the deployment and memory tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--no-edges", action="store_true", help="skip decoding the input (the slowest part)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from analysis.claims import fusion_markdown, memory_markdown, model_measurements, scoreboard, scoreboard_markdown
    from analysis.study import load_shipped_metrics
    from probes.catalogue import list_checkpoints

    cards = [c for c in list_checkpoints() if c["dataset"]["name"] == args.dataset and c.get("design") in ("linear", "relu6")]
    if not cards:
        print(f"No shipped linear or relu6 checkpoint on {args.dataset!r}.", file=sys.stderr)
        return 1
    measured = model_measurements(cards, edges=not args.no_edges, progress=True)
    board = scoreboard(load_shipped_metrics(args.dataset), cards, measured, dataset=args.dataset)
    seeds = {d: sum(c["design"] == d for c in cards) for d in ("linear", "relu6")}
    print(f"Scoreboard on {args.dataset} ({seeds['linear']} linear, {seeds['relu6']} relu6 checkpoints; "
          "difference = linear - relu6, mean over seeds with its 95 % t-interval):\n")
    print(scoreboard_markdown(board))
    print(fusion_markdown(measured))
    first = sorted(measured.memory["checkpoint"])[0]
    print(f"Memory per block of {first} (batch 1):\n")
    print(memory_markdown(measured, first))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
