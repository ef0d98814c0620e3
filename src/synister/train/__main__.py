"""``python -m synister.train NUM_ITERATIONS [--setup DIR]``: the entry for torchrun.

``torchrun --nproc_per_node=N -m synister.train 100000 --setup DIR`` trains on N GPUs.
"""

import sys

from synister.cli import main

sys.argv[1:1] = ["train"]
main()
