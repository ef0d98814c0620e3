"""Training to a wall-time budget: a timed warm-up plans the iterations, and the plan follows
the pace after every checkpoint; what a resumed demo must not forget lives in its state file."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from ..config import TRAIN_FILE, TrainConfig, read_ini, write_ini
from ..files import write_json
from ..models import list_checkpoints
from ..train import read_scalars, train
from .settings import DemoSettings

STATE_FILE = "demo_state.json"


def _say(message: str) -> None:
    print(f"[synister demo] {message}", flush=True)


class _State:
    """What a resumed demo must not redo or forget: planned iterations, checkpoint times."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}
        self.data.setdefault("train_seconds_at", {})

    def save(self) -> None:
        write_json(self.path, self.data)


def _steady_seconds_per_iteration(setup: Path, batch_size: int) -> float:
    """Seconds per iteration from the logged samples/s, leaving out the first interval (the
    loader's start)."""
    rates = read_scalars(setup / "log")["samples_per_s"]["value"].to_numpy()
    steady = rates[1:] if len(rates) > 1 else rates
    return batch_size / float(sorted(steady)[len(steady) // 2])


def _set_schedule(setup: Path, iterations: int, checkpoint_every: int) -> None:
    """Write the planned length into the setup's config, so that resuming keeps the schedule."""
    cfg = read_ini(setup / TRAIN_FILE, TrainConfig)
    cfg = cfg.model_copy(
        update={"schedule_iterations": iterations, "checkpoint_every": checkpoint_every}
    )
    write_ini(cfg, setup / TRAIN_FILE, "synister demo: schedule_iterations and checkpoint_every "
              "follow the timed warm-up")  # fmt: skip


def planned_iterations(
    budget_seconds: float, elapsed_seconds: float, done: int, seconds_per_iteration: float
) -> int:
    """The iteration a budgeted training should stop at: what the time left holds at the
    given pace, less a margin of 10 iterations (the last checkpoint's save); at least one
    more than ``done``."""
    left = budget_seconds - elapsed_seconds - 10 * seconds_per_iteration
    return max(done + 1, done + int(left / seconds_per_iteration))


def checkpoint_spacing(total: int, every: int, done: int, planned: int) -> int:
    """Checkpoint spacing after the plan changed from ``total`` to ``planned`` iterations at
    ``done``: the validation checkpoints the old plan had left spread over the new rest.

    A short last stretch does not count as one more checkpoint: a plan that shrinks a little
    after every stretch would otherwise keep as many checkpoints ahead as before it.
    """
    left = max(1, round((total - done) / every))
    return max(1, math.ceil((planned - done) / left))


def _train(setup: Path, settings: DemoSettings, state: _State, device) -> int:
    """Train to the planned iteration; returns it.

    With a wall-time budget (``minutes``), a timed warm-up plans the iterations, and after
    every checkpoint the plan (and with it the learning-rate schedule's length) follows the
    pace of the last stretch, so that a machine whose load changes still fills the budget.
    Checkpoint times count the whole training, pretraining included.
    """
    times = state.data["train_seconds_at"]
    spent = max(times.values(), default=state.data.get("pretrain_seconds", 0.0))
    start = time.perf_counter()

    def elapsed() -> float:
        return spent + time.perf_counter() - start

    def on_checkpoint(iteration: int, path: Path) -> None:
        times[str(iteration)] = round(elapsed(), 2)
        # the machine's load, to judge the pace of a long run on shared cores
        state.data.setdefault("load_average_at", {})[str(iteration)] = os.getloadavg()[0]
        state.save()

    def plan(done: int, seconds_per_iteration: float) -> int:
        return planned_iterations(settings.minutes * 60, elapsed(), done, seconds_per_iteration)

    if settings.minutes is None:
        total = state.data.get("iterations", settings.iterations)
        if "iterations" not in state.data:
            state.data.update(iterations=total, checkpoint_every=settings.checkpoint_every)
            state.save()
        train(setup, total, device=device, on_checkpoint=on_checkpoint)
        return total
    if "iterations" not in state.data:
        probe = settings.probe_iterations
        train(setup, probe, device=device, on_checkpoint=on_checkpoint)
        pace = _steady_seconds_per_iteration(setup, settings.batch_size)
        total = max(probe + settings.validation_checkpoints, plan(probe, pace))
        _say(f"   warm-up: {pace:.3f} s per iteration; {total} iterations fit the budget")
        every = max(1, total // settings.validation_checkpoints)
        state.data.update(iterations=total, checkpoint_every=every)
        state.save()
        _set_schedule(setup, total, every)
    while True:
        total, every = state.data["iterations"], state.data["checkpoint_every"]
        done = max((i for i, _ in list_checkpoints(setup)), default=0)
        if done >= total:
            return total
        target = min(total, (done // every + 1) * every)
        t = time.perf_counter()
        train(setup, target, device=device, on_checkpoint=on_checkpoint)
        pace = (time.perf_counter() - t) / max(target - done, 1)
        if target < total:  # follow the pace of this stretch
            planned = plan(target, pace)
            if abs(planned - total) > 0.02 * total:
                every = checkpoint_spacing(total, every, target, planned)
                _say(
                    f"   {pace:.3f} s per iteration lately: now {planned} iterations, "
                    f"a checkpoint every {every}"
                )
                state.data.update(iterations=planned, checkpoint_every=every)
                state.save()
                _set_schedule(setup, planned, every)
