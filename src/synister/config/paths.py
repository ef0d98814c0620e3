"""Setup folders' configs with their relative paths resolved against BASE."""

from __future__ import annotations

from pathlib import Path

from synister.layout import PREDICT_FILE, TRAIN_FILE, WORKER_FILE, experiment_base

from .ini import read_ini
from .schema import PredictConfig, TrainConfig
from .worker import WorkerConfig


def _resolve(path: str, base_dir: Path) -> str:
    if "://" in path:
        return path
    expanded = Path(path).expanduser()
    return str(expanded if expanded.is_absolute() else (base_dir / expanded).resolve())


def resolve_paths(config, base_dir: str | Path):
    """A copy of ``config`` with its relative paths made absolute against ``base_dir`` (BASE)."""
    base_dir = Path(base_dir)
    update: dict[str, str] = {}
    for key in ("raw_container", "db_credentials", "train_checkpoint", "init_checkpoint"):
        value = getattr(config, key, None)
        if value:
            update[key] = _resolve(value, base_dir)
    url = getattr(config, "db_url", None)
    if url and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        file = url[len("sqlite:///") :]
        if file and file != ":memory:":
            update["db_url"] = "sqlite:///" + _resolve(file, base_dir)
    return config.model_copy(update=update)


def load_train_setup(setup_dir: str | Path) -> tuple[TrainConfig, WorkerConfig]:
    """``train_config.ini`` and ``worker_config.ini`` of a training setup, paths resolved."""
    setup_dir = Path(setup_dir)
    train = read_ini(setup_dir / TRAIN_FILE, TrainConfig)
    worker = read_ini(setup_dir / WORKER_FILE, WorkerConfig)
    return resolve_paths(train, experiment_base(setup_dir)), worker


def load_predict_setup(setup_dir: str | Path) -> tuple[PredictConfig, WorkerConfig]:
    """``predict_config.ini`` and ``worker_config.ini`` of a prediction setup, paths resolved."""
    setup_dir = Path(setup_dir)
    predict = read_ini(setup_dir / PREDICT_FILE, PredictConfig)
    worker = read_ini(setup_dir / WORKER_FILE, WorkerConfig)
    return resolve_paths(predict, experiment_base(setup_dir)), worker
