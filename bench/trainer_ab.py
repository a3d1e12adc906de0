"""Seqtrain's trainer at another revision against this checkout, in one sitting.

Checks out REV into a temporary git worktree and runs `bench/trainer_throughput.py --part
seqtrain` (one SST-2 epoch, 2 threads) of each tree in turn, ROUNDS times, alternating so
that the machine's drift falls on both sides alike. Each run is a fresh interpreter that
imports its own tree's code.

    .venv/bin/python bench/trainer_ab.py --base REV [--rounds 3] [--data DIR]

Besides samples/s of the epoch (wall time), it reports each run's CPU seconds, which vary
less than wall time when other work shares the cores. Progress goes to stderr; the last
line of stdout is one JSON object of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "sst2"


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_tree(tree: Path, data: Path) -> dict[str, float]:
    command = [
        sys.executable,
        str(tree / "bench" / "trainer_throughput.py"),
        "--part",
        "seqtrain",
        "--data",
        str(data),
    ]
    # The tree comes first on the path, so its own packages are the ones imported.
    env = dict(os.environ, PYTHONPATH=str(tree))
    before = child_cpu_seconds()
    done = subprocess.run(command, cwd=tree, env=env, stdout=subprocess.PIPE, text=True, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    # CPU seconds of the whole run (reading, tokenizing, the epoch, evaluation): the same work
    # on both sides, and steadier than wall time when other processes share the cores.
    figures["cpu_seconds"] = child_cpu_seconds() - before
    return figures


def summary(runs: list[dict[str, float]]) -> dict[str, object]:
    speeds = [r["samples_per_s"] for r in runs]
    cpu = [r["cpu_seconds"] for r in runs]
    return {
        "samples_per_s": [round(s, 1) for s in speeds],
        "median_samples_per_s": round(statistics.median(speeds), 1),
        "cpu_seconds": [round(c, 1) for c in cpu],
        "median_cpu_seconds": round(statistics.median(cpu), 1),
        "dev_accuracy": sorted({round(r["dev_accuracy"], 4) for r in runs}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the revision to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    if not (args.data / "train.tsv").is_file():
        sys.exit(f"SST-2 not found under {args.data}")
    with tempfile.TemporaryDirectory() as scratch:
        base_tree = Path(scratch) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(base_tree), args.base],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        try:
            runs: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
            for round_ in range(args.rounds):
                for name, tree in (("base", base_tree), ("head", ROOT)):
                    print(f"round {round_ + 1}: {name}", file=sys.stderr, flush=True)
                    runs[name].append(run_tree(tree, args.data.resolve()))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT)
    base, head = summary(runs["base"]), summary(runs["head"])
    ratio = head["median_samples_per_s"] / base["median_samples_per_s"]  # type: ignore[operator]
    cpu_ratio = head["median_cpu_seconds"] / base["median_cpu_seconds"]  # type: ignore[operator]
    figures = {
        "base": args.base,
        "base_runs": base,
        "head_runs": head,
        "samples_per_s_ratio": round(ratio, 3),
        "cpu_seconds_ratio": round(cpu_ratio, 3),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
