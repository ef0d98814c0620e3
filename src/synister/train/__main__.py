"""``python -m synister.train NUM_ITERATIONS [--setup DIR] [--device D]``: the entry for torchrun.

``torchrun --nproc_per_node=N -m synister.train 100000 --setup DIR`` trains on N GPUs. It does
what ``synister train`` does, without the command line package (which sits above training).
"""

import argparse
import sys

from synister.train import NotATrainingSetup, train
from synister.train.setup_run import summary_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synister.train", description=__doc__)
    parser.add_argument("num_iterations", type=int, help="train until this iteration")
    parser.add_argument("--setup", default=".", help="the training setup folder")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:1")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    if args.num_iterations < 1:
        parser.error("NUM_ITERATIONS must be at least 1")
    try:
        result = train(args.setup, args.num_iterations, device=args.device, progress=args.progress)
    except (NotATrainingSetup, ValueError) as err:  # ConfigError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary_line(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
