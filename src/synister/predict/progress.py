"""The progress display every prediction front-end shows: done/total, synapses/s and ETA."""

from __future__ import annotations

import time

from tqdm import tqdm

PROGRESS_FORMAT = (
    "{desc}: {n_fmt}/{total_fmt} synapses {percentage:3.0f}%|{bar}| "
    "[{elapsed}<{remaining} ETA, {rate_noinv_fmt}]"
)


def progress_bar(total: int, initial: int, desc: str, enabled: bool = True) -> tqdm:
    """A bar on stderr counting stored synapses from ``initial`` (those stored before)."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=" synapses",
        bar_format=PROGRESS_FORMAT,
        disable=not enabled,
        dynamic_ncols=True,
    )


class StoredCounter:
    """Counts stored synapses for the progress bar, and the rate after start-up: from the
    first computed batch (after model loading, reader start and the first reads) to the last
    stored one."""

    def __init__(self, bar: tqdm):
        self.bar = bar
        self.count = 0
        self.first_count = 0
        self.first_time: float | None = None
        self.last_time: float | None = None

    def computed(self, n: int) -> None:
        """Note a batch of ``n`` synapses that went through the network."""
        if self.first_time is None:
            self.first_time, self.first_count = time.perf_counter(), n

    def __call__(self, n: int) -> None:
        self.computed(n)  # where computed batches are not reported (block workers)
        self.count += n
        self.last_time = time.perf_counter()
        self.bar.update(n)

    def steady_rate(self) -> float:
        """Synapses/s after start-up (NaN with fewer than 2 batches)."""
        if self.first_time is None or self.last_time <= self.first_time:
            return float("nan")
        return (self.count - self.first_count) / (self.last_time - self.first_time)
