"""What training and prediction will need, checked when their setups are made.

``prepare-training`` and ``prepare-prediction`` write configs that later steps read, often much
later and on other machines. Whatever those steps need and can be checked now is checked now,
and each message names the setting to change: the split exists (``split_name``), its parts
hold synapses of every class (``synapse_types``; :func:`synister.data.check_split`, which
training runs too), and the synapses lie in the raw volume
(``raw_container``, ``raw_dataset``, ``voxel_size``; a units mix-up at ``db import`` shows
here, where the volume is known).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from synister import db as database
from synister.config import resolve_paths
from synister.data import MissingSplit, SplitDataError, check_split, part_counts
from synister.layout import PREDICT_FILE, TRAIN_FILE
from synister.volumes.sanity import check_positions, require_fit

from .training import SetupError

#: the file of each config section (messages name the setting and where it is)
CONFIG_FILES = {"Training": TRAIN_FILE, "Predict": PREDICT_FILE}
#: how to make a setup before its split is made
SKIP = "--skip-data-check if the split is not ready yet"


class DataCheckError(SetupError):
    """A split, its classes or its positions do not fit the setup; names the setting."""


def check_data(
    config,
    base_dir: str | Path,
    parts: Sequence[str],
    volume=None,
    strict: bool = False,
    every_class: bool = True,
) -> list[str]:
    """What a setup's later step needs from the database, for a training or prediction
    config: the split exists and ``parts[0]`` (the part the step reads) holds synapses of
    every class, or with ``every_class`` False of some (:func:`check_split`); with
    ``volume``, they lie in it (:func:`check_positions_fit`). Raises :class:`DataCheckError`;
    returns the warnings (one saying nothing was checked where the database cannot be opened:
    not made yet, or only the compute nodes reach it)."""
    url = resolve_paths(config, Path(base_dir).expanduser().resolve()).database_url()
    classes, split = config.classes, config.split_name
    try:
        db = database.open_database(url, create=False)
    except database.DatabaseError as error:  # not made yet, or not reachable from here
        return [f"split {split!r} and its classes not checked: {error}"]
    try:
        with db:
            where = database.public_url(url)
            settings = f"{CONFIG_FILES[config.SECTION]} [{config.SECTION}]"
            _, warnings = check_split(db, split, classes, parts, where, every_class, settings)
            if volume is not None:
                fit = check_positions_fit(
                    db, split, classes, parts[0], volume, config.input_shape, strict
                )
                warnings += [fit] if fit else []
    except MissingSplit as error:
        raise DataCheckError(f"{error} ({SKIP})") from None
    except (SplitDataError, database.DatabaseError) as error:
        raise DataCheckError(str(error)) from None
    return warnings


def check_positions_fit(
    db, split_name: str, classes: Sequence[str], part: str, volume, patch_vox, strict: bool
) -> str | None:
    """The warning (None: they fit) where most synapses of ``part`` fall outside ``volume``:
    synapses imported in the wrong units, or the wrong volume; with ``strict`` an error."""
    synapses, _ = part_counts(db, split_name, classes, part)
    if not len(synapses):
        return None
    check = check_positions(volume, synapses[["z", "y", "x"]].to_numpy(np.float64), patch_vox)
    where = f"split {split_name!r} part {part} (raw_container, raw_dataset, voxel_size)"
    try:
        return require_fit(check, strict, where)
    except ValueError as error:
        raise DataCheckError(str(error)) from None


__all__ = ["DataCheckError", "check_data", "check_positions_fit"]
