"""Typed configs and the one place that reads and writes the seed's ``.ini`` files.

The files keep the original synister format (``[Training]``, ``[Worker]``, ``[Predict]``;
lists as ``gaba, acetylcholine``, shapes as ``16, 160, 160``, downsample factors as
``(1, 2, 2), (2, 2, 2)``, ``None``, ``True``/``False``) so that old setups load unchanged and new
files stay readable by the original scripts. Errors name the file, section and key.

Relative paths (``raw_container``, ``db_credentials``, ``train_checkpoint`` and the file of a
``sqlite:///`` URL) are relative to BASE, the folder that holds the experiment folder
(``BASE/EXPERIMENT/02_train/setup_t<ID>``), as in the seed's ``train_checkpoint`` example.
:func:`load_train_setup` and :func:`load_predict_setup` return them resolved.
"""

from __future__ import annotations

import configparser
import re
import types
import typing
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import quote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from synister import nt

TRAIN_FILE = "train_config.ini"
WORKER_FILE = "worker_config.ini"
PREDICT_FILE = "predict_config.ini"

#: a checkpoint, or the weight average beside it (``synister.train.averaging``)
_CHECKPOINT_RE = re.compile(r"model_checkpoint_(\d+)(?:\.averaged)?$")


class ConfigError(ValueError):
    """A config file or value is missing or malformed; the message names file, section and key."""


class ConfigWarning(UserWarning):
    """A config file holds a key synister does not know; it is ignored."""


# ---- text <-> value conversion (the seed's formats) ----------------------------------------------


class _ParseError(ValueError):
    """A value's text does not fit its type; carries the message without file/section/key."""


def _is_none(text: str) -> bool:
    return text.strip() in ("", "None")


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _parse_ints(text: str, count: int | None) -> tuple[int, ...]:
    items = _split_list(text.replace("(", "").replace(")", ""))
    what = {None: "integers", 3: "three integers"}.get(count, f"{count} integers")
    try:
        values = tuple(int(item) for item in items)
    except ValueError:
        raise _ParseError(f"expected {what} separated by commas") from None
    if count is not None and len(values) != count:
        raise _ParseError(f"expected {what}")
    if not values:
        raise _ParseError(f"expected {what}, got none")
    return values


def _parse_factor_list(text: str) -> list[tuple[int, int, int]]:
    """``(1,2,2), (1, 2, 2), (2,2,2)``: one z,y,x triple per level."""
    groups = re.findall(r"\(([^()]*)\)", text)
    leftover = re.sub(r"\(([^()]*)\)", "", text).replace(",", "").strip()
    if not groups or leftover:
        raise _ParseError("expected triples like (1, 2, 2), (2, 2, 2)")
    return [_parse_ints(group, 3) for group in groups]  # type: ignore[misc]


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise _ParseError("expected True or False")


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); other annotations -> (annotation, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def text_to_value(text: str, annotation: Any) -> Any:
    """Convert an ini value to the Python value of a field annotated ``annotation``."""
    inner, optional = _strip_optional(annotation)
    if optional and _is_none(text):
        return None
    if inner is str and _is_none(text):
        raise _ParseError("must be set")
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if inner is bool:
        return _parse_bool(text)
    if inner is int:
        try:
            return int(text.strip())
        except ValueError:
            raise _ParseError("expected an integer") from None
    if inner is float:
        try:
            return float(text.strip())
        except ValueError:
            raise _ParseError("expected a number") from None
    if origin is tuple and args and args[0] is int:
        count = None if (len(args) == 2 and args[1] is Ellipsis) else len(args)
        return _parse_ints(text, count)
    if origin is tuple and args and args[0] is str:
        return () if _is_none(text) else tuple(_split_list(text))
    if origin is list and args and typing.get_origin(args[0]) is tuple:
        return _parse_factor_list(text)
    if origin is list and args and args[0] is str:
        return _split_list(text)
    return text.strip()


def value_to_text(value: Any) -> str:
    """The seed's text for a value: ``a, b``; ``16, 160``; ``(1, 2, 2), (2, 2, 2)``; ``None``."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, list | tuple):
        if not value:
            return "None"
        if isinstance(value[0], list | tuple):
            return ", ".join("(" + ", ".join(str(v) for v in item) + ")" for item in value)
        return ", ".join(str(v) for v in value)
    return str(value)


def _plain(value: Any) -> Any:
    """Tuples (nested too) as lists: the JSON form of a config value."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


# ---- the models ----------------------------------------------------------------------------------


class _IniModel(BaseModel):
    """A config that lives in one section of one ini file."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    SECTION: ClassVar[str]
    FILE_NAME: ClassVar[str]
    KEY_ORDER: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def read(cls, path: str | Path):
        """Read ``path``; unknown keys warn, bad or missing values raise :class:`ConfigError`."""
        return read_ini(path, cls)

    def write(self, path: str | Path, header: str | None = None) -> None:
        write_ini(self, path, header)


def _positive(values, key: str):
    if any(v <= 0 for v in values):
        raise ValueError(f"{key}: all values must be positive")
    return values


class _ModelFields(_IniModel):
    """Fields shared by training and prediction: network, data and database."""

    #: Fields that do not shape the network (data, database, batching). Every other field is a
    #: network setting (:meth:`network_settings`): it goes into checkpoints and model bundles,
    #: so a field added here later travels with trained networks unless listed.
    NOT_NETWORK: ClassVar[frozenset[str]] = frozenset(
        {
            "synapse_types",  # bundles store the classes instead
            "neither_class",
            "input_shape",  # bundles store it as input_shape_vox
            "voxel_size",
            "batch_size",
            "db_url",
            "db_credentials",
            "db_name_data",
            "split_name",
            "raw_container",
            "raw_dataset",
            "network_appendix",
        }
    )

    synapse_types: list[str] = Field(
        description="transmitters the network tells apart, in class order (output index = position)"
    )
    input_shape: tuple[int, int, int] = Field(description="network input patch in voxels, z, y, x")
    fmaps: int = Field(12, gt=0, description="feature maps of the first level")
    batch_size: int = Field(8, gt=0, description="patches per step")
    db_url: str | None = Field(
        None,
        description="database URL: sqlite:///file.db (relative to BASE), sqlite:////abs/file.db, "
        "postgresql://user@host/db or mongodb://host:port/db; wins over db_credentials",
    )
    db_credentials: str | None = Field(
        None,
        description="the original's MongoDB credentials ini ([Credentials] user, password, host, "
        "port); used when db_url is None",
    )
    db_name_data: str | None = Field(
        None,
        description="database name where db_url names none (MongoDB, PostgreSQL) and with "
        "db_credentials; where db_url names one (or a SQLite file) it must agree or be None",
    )
    split_name: str = Field(description="name of the stored split (synister split make --name)")
    voxel_size: tuple[int, int, int] = Field(description="voxel size of raw in nm, z, y, x")
    raw_container: str = Field(
        description="EM volume: zarr/N5 folder or precomputed URL (relative paths: to BASE)"
    )
    raw_dataset: str = Field(description="dataset inside raw_container, e.g. volumes/raw/s0")
    downsample_factors: list[tuple[int, int, int]] = Field(
        description="max-pool factor per network level, z, y, x"
    )
    network: Literal["VGG", "ResNet18"] = Field("VGG", description="VGG or ResNet18")
    fmap_inc: tuple[int, ...] = Field(
        None,  # filled per level by the validator below
        validate_default=True,
        description="factor by which feature maps grow after each level (one per level)",
    )
    n_convolutions: tuple[int, ...] = Field(
        None,
        validate_default=True,
        description="3x3x3 convolutions per level (one per level)",
    )
    classifier_units: int = Field(
        4096,
        gt=0,
        description="units of each of the VGG's two hidden classifier layers (funlib's 4096)",
    )
    network_appendix: str | None = Field(None, description="free text the original kept; unused")
    neither_class: bool = Field(
        False, description="add a 'neither' class of non-synaptic locations"
    )

    @field_validator("synapse_types")
    @classmethod
    def _canonical_types(cls, names: list[str]) -> list[str]:
        if not names:
            raise ValueError("synapse_types: at least one transmitter is needed")
        canonical = [nt.canonical(name) for name in names]
        duplicates = sorted({n for n in canonical if canonical.count(n) > 1})
        if duplicates:
            raise ValueError(f"synapse_types: listed twice: {', '.join(duplicates)}")
        return canonical

    @field_validator("input_shape", "voxel_size")
    @classmethod
    def _positive_shape(cls, values, info):
        return _positive(values, info.field_name)

    @field_validator("downsample_factors")
    @classmethod
    def _factors(cls, factors):
        if not factors:
            raise ValueError("downsample_factors: at least one level is needed")
        for factor in factors:
            _positive(factor, "downsample_factors")
        return factors

    @field_validator("fmap_inc", "n_convolutions", mode="before")
    @classmethod
    def _per_level_default(cls, values, info):
        if values is None:
            return (2,) * len(info.data.get("downsample_factors") or ())
        return values

    @field_validator("fmap_inc", "n_convolutions")
    @classmethod
    def _one_per_level(cls, values, info):
        levels = len(info.data.get("downsample_factors") or ())
        if levels and len(values) != levels:
            raise ValueError(
                f"{info.field_name}: expected one value per level of downsample_factors "
                f"({levels} levels), found {len(values)} values"
            )
        return _positive(values, info.field_name)

    @model_validator(mode="after")
    def _shape_fits_network(self):
        if self.network == "VGG":
            size = list(self.input_shape)
            for level, factor in enumerate(self.downsample_factors):
                if any(s % f for s, f in zip(size, factor, strict=True)):
                    raise ValueError(
                        f"input_shape: {value_to_text(self.input_shape)} cannot be max-pooled by "
                        f"downsample_factors (level {level}: {value_to_text(size)} by "
                        f"{value_to_text(factor)}); the VGG needs exact division"
                    )
                size = [s // f for s, f in zip(size, factor, strict=True)]
        if self.neither_class and "neither" in self.synapse_types:
            raise ValueError("synapse_types: 'neither' is added by neither_class; do not list it")
        return self

    @property
    def classes(self) -> list[str]:
        """Network output classes in order: synapse_types, then 'neither' when asked for."""
        return list(self.synapse_types) + (["neither"] if self.neither_class else [])

    def network_settings(self) -> dict[str, Any]:
        """The settings that shape the network (all fields but :attr:`NOT_NETWORK`), as plain
        JSON values (tuples become lists)."""
        return {
            key: _plain(getattr(self, key))
            for key in _ModelFields.model_fields
            if key not in self.NOT_NETWORK
        }

    def database_url(self) -> str:
        """``db_url`` if set, else a ``mongodb://`` URL from db_credentials and db_name_data.

        ``db_name_data`` fills in the database of a MongoDB or PostgreSQL URL that names none;
        where the URL names one (or is a SQLite file, whose name without ``.db`` counts), a
        different db_name_data raises :class:`ConfigError` rather than being ignored.
        """
        if self.db_url:
            return url_with_database(self.db_url, self.db_name_data, f"[{self.SECTION}]")
        if self.db_credentials:
            if not self.db_name_data:
                raise ConfigError(
                    f"[{self.SECTION}] db_name_data: needed with db_credentials (the name of "
                    "the MongoDB database)"
                )
            return mongo_url_from_credentials(self.db_credentials, self.db_name_data)
        raise ConfigError(
            f"[{self.SECTION}] db_url: no database given; set db_url (or the original's "
            "db_credentials)"
        )


def url_with_database(url: str, db_name: str | None, where: str = "") -> str:
    """``url`` with database ``db_name`` filled in where it names none; a URL that names
    another database raises :class:`ConfigError` (the message never shows the URL, which may
    hold a password)."""
    from urllib.parse import urlsplit, urlunsplit

    if not db_name:
        return url
    prefix = f"{where} db_name_data".strip()
    if url.startswith("sqlite:"):
        file = url.split(":///", 1)[-1]
        named = Path(file).stem
        if named != db_name:
            raise ConfigError(
                f"{prefix}: {db_name!r} disagrees with the SQLite file {file} (its name, "
                f"{named!r}, is the database's); set db_name_data = None or {named}"
            )
        return url
    parts = urlsplit(url)
    named = parts.path.lstrip("/")
    if not named:
        return urlunsplit(parts._replace(path="/" + db_name))
    if named != db_name:
        raise ConfigError(
            f"{prefix}: {db_name!r} disagrees with the database {named!r} that db_url names; "
            "make them agree, or set db_name_data = None"
        )
    return url


class TrainConfig(_ModelFields):
    """Section ``[Training]`` of ``train_config.ini``."""

    SECTION: ClassVar[str] = "Training"
    FILE_NAME: ClassVar[str] = TRAIN_FILE

    learning_rate: float = Field(1e-4, gt=0, description="Adam learning rate (the original's)")
    checkpoint_every: int = Field(
        1000, gt=0, description="iterations between model_checkpoint_<iteration> files"
    )
    snapshot_every: int = Field(100, gt=0, description="iterations between batch snapshots")
    log_every: int = Field(10, gt=0, description="iterations between tensorboard scalars")
    augment: bool = Field(True, description="elastic, mirror/transpose and intensity augmentation")
    elastic_augment: bool = Field(
        True,
        description="with augment: also the elastic part (jitter, rotation, section slips), "
        "which also bends sizes by a few percent",
    )
    seed: int = Field(0, description="random seed for sampling, augmentation and weights")
    mixed_precision: bool = Field(True, description="float16 autocast (GPU only)")
    compile_model: bool = Field(False, description="torch.compile the network (GPU only)")
    lr_schedule: Literal["constant", "cosine", "step"] = Field(
        "constant",
        description="learning rate over the iterations: constant (the original's), cosine "
        "(down to lr_final_fraction of learning_rate) or step (x0.1 at 1/2 and 3/4 of "
        "schedule_iterations)",
    )
    warmup_iterations: int = Field(
        0, ge=0, description="iterations of linear warm-up from 0 to learning_rate"
    )
    schedule_iterations: int | None = Field(
        None,
        gt=0,
        description="iterations the schedule spans; None: the iterations `synister train` is "
        "asked to reach (set it when a long run is trained in several calls)",
    )
    lr_final_fraction: float = Field(
        0.01, ge=0, le=1, description="cosine schedule: the last rate as a share of learning_rate"
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="share of the target probability spread over all classes"
    )
    channels_last: bool = Field(
        True,
        description="keep activations channels-last (N, Z, Y, X, C) in training: 1.1-2x faster "
        "steps for the 3D networks on CPU (oneDNN)",
    )
    init_checkpoint: str | None = Field(
        None,
        description="weights to start from when the setup has no checkpoint yet (e.g. a "
        "network trained on an easier dataset: a curriculum); absolute, or relative to BASE",
    )
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="keep an exponential moving average of the weights (batch-norm statistics "
        "included) with this decay per iteration and save it beside each checkpoint as "
        "model_checkpoint_<iteration>.averaged; 0: none. 0.998 averages over about the last "
        "500 iterations",
    )
    logit_adjustment: bool = Field(
        False,
        description="train on class-balanced batches but make the outputs posteriors under the "
        "train part's class frequencies (the loss sees logits - log frequency), so that argmax "
        "decisions suit data as imbalanced as the training part",
    )

    @model_validator(mode="after")
    def _adjustment_needs_frequencies(self):
        if self.logit_adjustment and self.neither_class:
            raise ValueError(
                "logit_adjustment: the 'neither' class has no frequency; use one or the other"
            )
        return self


#: placeholders of ``submit_command``: the worker settings, the job's name and the command
SUBMIT_PLACEHOLDERS = (
    "queue",
    "num_cpus",
    "num_block_workers",
    "num_cache_workers",
    "singularity_container",
    "mount_dirs",
    "job_name",
    "command",
)


class WorkerConfig(_IniModel):
    """Section ``[Worker]`` of ``worker_config.ini``: compute resources and job submission.

    ``queue``, ``singularity_container`` and ``mount_dirs`` (the original's cluster settings)
    are used through ``submit_command``, the template ``synister train --submit`` and
    ``synister predict --submit`` run (see :func:`submit_command`); without a template they
    make the original's: ``bsub -q {queue} -n {num_cpus} -gpu num=1`` where a queue is set,
    then ``singularity exec --nv -B {mount_dirs} {singularity_container}`` where a container is.
    A set value that the template does not use is an error: no setting is silently ignored.
    """

    SECTION: ClassVar[str] = "Worker"
    FILE_NAME: ClassVar[str] = WORKER_FILE

    singularity_container: str | None = Field(
        None, description="container image the submitted job runs in (see submit_command)"
    )
    num_cpus: int = Field(5, gt=0, description="CPU cores for the job")
    num_block_workers: int = Field(1, gt=0, description="parallel prediction workers (GPUs)")
    num_cache_workers: int = Field(
        5, ge=0, description="data loader worker processes (capped at the CPU count)"
    )
    queue: str | None = Field(None, description="cluster queue of submitted jobs (submit_command)")
    mount_dirs: tuple[str, ...] = Field(
        (), description="folders mounted into the container (submit_command)"
    )
    submit_command: str | None = Field(
        None,
        description="job submission template of --submit, e.g. sbatch -p {queue} -c {num_cpus} "
        "--gres=gpu:1 --wrap '{command}'; placeholders: "
        + ", ".join("{" + name + "}" for name in SUBMIT_PLACEHOLDERS)
        + "; None: bsub/singularity from queue and singularity_container, if set",
    )

    @model_validator(mode="after")
    def _settings_are_used(self):
        template = self.submit_template()
        used = _template_fields(template) if template is not None else set()
        unknown = sorted(used - set(SUBMIT_PLACEHOLDERS))
        if unknown:
            raise ValueError(
                f"submit_command: unknown placeholder {{{unknown[0]}}}; known: "
                + ", ".join("{" + name + "}" for name in SUBMIT_PLACEHOLDERS)
            )
        if template is not None and "command" not in used:
            raise ValueError("submit_command: must contain {command}, the synister command")
        values = self._submit_values()
        for name in sorted(used - {"command", "job_name"}):
            if values[name] in (None, ""):
                raise ValueError(f"submit_command: uses {{{name}}} but {name} is not set")
        for name in ("queue", "singularity_container", "mount_dirs"):
            if values[name] and name not in used:
                which = (
                    "submit_command does"
                    if self.submit_command is not None
                    else "no submit_command is set, and the default one does (it mounts "
                    "folders only into a singularity_container)"
                )
                raise ValueError(
                    f"{name}: set to {value_to_text(getattr(self, name))!r} but {which} not use "
                    f"{{{name}}}; add it to a submit_command or set {name} = None"
                )
        return self

    def submit_template(self) -> str | None:
        """``submit_command``, else the original's bsub/singularity command made from
        ``queue`` and ``singularity_container``; None when neither is set (no submission)."""
        if self.submit_command is not None:
            return self.submit_command
        parts = []
        if self.queue:
            parts.append("bsub -q {queue} -n {num_cpus} -gpu num=1")
        if self.singularity_container:
            mounts = " -B {mount_dirs}" if self.mount_dirs else ""
            parts.append(f"singularity exec --nv{mounts} {{singularity_container}}")
        if not parts:
            return None
        return " ".join(parts + ["{command}"])

    def _submit_values(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "num_cpus": self.num_cpus,
            "num_block_workers": self.num_block_workers,
            "num_cache_workers": self.num_cache_workers,
            "singularity_container": self.singularity_container,
            "mount_dirs": ",".join(self.mount_dirs),
        }


def _template_fields(template: str) -> set[str]:
    """The placeholder names in a submit template; bad syntax raises ValueError."""
    import string

    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(
            f"submit_command: {exc} (write {{{{ and }}}} for literal braces)"
        ) from None


def submit_command(worker: WorkerConfig, argv: list[str], job_name: str = "synister") -> list[str]:
    """The command line that submits ``argv`` as a job, from the worker config's template.

    The template is split like a shell line; an unquoted word ``{command}`` becomes the words of
    ``argv``, elsewhere (``--wrap '{command}'``, ``bash -c '... {command}'``) ``{command}``
    becomes ``argv`` quoted as one shell line. ``{mount_dirs}`` is the
    folders joined by commas (singularity's ``-B`` form). Raises :class:`ConfigError` when the
    worker config has no template (nothing to submit with).
    """
    import shlex

    template = worker.submit_template()
    if template is None:
        raise ConfigError(
            f"{WORKER_FILE} [Worker] submit_command: not set, nor queue or "
            "singularity_container; set e.g. submit_command = sbatch -c {num_cpus} --gres=gpu:1 "
            "--wrap '{command}'"
        )
    values = {**worker._submit_values(), "job_name": job_name, "command": shlex.join(argv)}
    values = {key: "" if value is None else value for key, value in values.items()}
    lexer = shlex.shlex(template, posix=False)  # keeps quotes: '{command}' stays one word
    lexer.whitespace_split = True
    words: list[str] = []
    for raw in lexer:
        if raw == "{command}":
            words.extend(argv)
        else:
            words.append(" ".join(shlex.split(raw)).format(**values))
    return words


class PredictConfig(_ModelFields):
    """Section ``[Predict]`` of ``predict_config.ini``: one prediction run of one checkpoint."""

    SECTION: ClassVar[str] = "Predict"
    FILE_NAME: ClassVar[str] = PREDICT_FILE
    KEY_ORDER: ClassVar[tuple[str, ...]] = (
        "train_checkpoint",
        "experiment",
        "train_number",
        "predict_number",
    )

    train_checkpoint: str = Field(
        description="checkpoint file .../02_train/setup_t<ID>/model_checkpoint_<iteration> "
        "(relative paths: to BASE)"
    )
    experiment: str = Field(description="experiment name (the folder under BASE)")
    train_number: int = Field(ge=0, description="ID of the training setup")
    predict_number: int = Field(ge=0, description="number of this prediction setup")
    split_part: Literal["train", "validation", "test"] = Field(
        description="part of the split to predict: validation, test, or train (to check "
        "over-fitting)"
    )
    overwrite: bool = Field(False, description="replace a stored prediction run of the same name")
    allow_other_input_shape: bool = Field(
        False,
        description="predict with an input_shape other than the one the network was trained on "
        "(accuracy may drop)",
    )

    @property
    def run_name(self) -> str:
        """Name of the prediction run in the database (the original's collection name)."""
        return f"{self.split_name}_{self.experiment}_t{self.train_number}_p{self.predict_number}"

    @property
    def iteration(self) -> int | None:
        """Training iteration of ``train_checkpoint`` (``model_checkpoint_<iteration>``, or
        its weight average ``model_checkpoint_<iteration>.averaged``); None for a checkpoint
        file named otherwise (one trained elsewhere)."""
        match = _CHECKPOINT_RE.search(Path(self.train_checkpoint).name)
        return int(match.group(1)) if match else None


# ---- reading and writing -------------------------------------------------------------------------


def _format_validation_error(error: ValidationError, where: str) -> str:
    lines = []
    for item in error.errors():
        message = str(item.get("msg", "")).removeprefix("Value error, ")
        key = str(item["loc"][0]) if item.get("loc") else None
        if key and message.startswith(f"{key}: "):
            message = message[len(key) + 2 :]
        elif key is None and ": " in message:
            key, message = message.split(": ", 1)
        if item.get("type") == "missing":
            message = "missing (required key)"
        got = item.get("input")
        show = item.get("loc") and item.get("type") != "missing" and not isinstance(got, dict)
        suffix = f", got {value_to_text(got)!r}" if show else ""
        lines.append(f"{where} {key or ''}: {message}{suffix}".replace(" :", ":"))
    return "; ".join(lines)


def build_config(cls, values: dict[str, Any], where: str):
    """Validate ``values`` (ini text or Python values) into ``cls``; errors name ``where`` + key."""
    converted = {}
    for key, value in values.items():
        field = cls.model_fields.get(key)
        if field is None:
            raise ConfigError(f"{where} {key}: unknown key; known: {', '.join(cls.model_fields)}")
        if isinstance(value, str):
            try:
                value = text_to_value(value, field.annotation)
            except _ParseError as exc:
                raise ConfigError(f"{where} {key}: {exc}, got {value!r}") from None
        converted[key] = value
    try:
        return cls(**converted)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, where)) from None


def _open_ini(path: Path, what: str) -> configparser.ConfigParser:
    """The parsed ini file ``path`` (no interpolation); a missing or invalid file raises
    :class:`ConfigError` naming it as ``what`` ("config file", "db_credentials file")."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except configparser.Error as exc:
        raise ConfigError(f"{path}: not a valid ini file: {exc}") from None
    return parser


def read_ini(path: str | Path, cls):
    """Read section ``cls.SECTION`` of ``path`` into ``cls``; unknown keys warn and are ignored."""
    path = Path(path)
    parser = _open_ini(path, "config file")
    if not parser.has_section(cls.SECTION):
        found = ", ".join(parser.sections()) or "none"
        raise ConfigError(f"{path}: no [{cls.SECTION}] section (sections found: {found})")
    where = f"{path} [{cls.SECTION}]"
    values = {}
    for key, text in parser.items(cls.SECTION):
        if key in cls.model_fields:
            values[key] = text
        else:
            warnings.warn(f"{where} {key}: unknown key, ignored", ConfigWarning, stacklevel=3)
    return build_config(cls, values, where)


def _key_order(config: _IniModel) -> list[str]:
    first = [key for key in config.KEY_ORDER if key in type(config).model_fields]
    return first + [key for key in type(config).model_fields if key not in first]


def write_ini(config: _IniModel, path: str | Path, header: str | None = None) -> None:
    """Write ``config`` in the seed's format, each key after a comment saying what it means."""
    lines = [f"# {line}".rstrip() for line in (header or "").splitlines()]
    if lines:
        lines.append("")
    lines.append(f"[{config.SECTION}]")
    for key in _key_order(config):
        description = type(config).model_fields[key].description
        if description:
            lines.append(f"# {description}")
        lines.append(f"{key} = {value_to_text(getattr(config, key))}")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)


# ---- database credentials and paths --------------------------------------------------------------


def mongo_url_from_credentials(credentials_file: str | Path, db_name: str | None = None) -> str:
    """The original's credentials ini (``[Credentials]`` user/password/host/port, optional
    ``[Connection]`` is_srv/options) as a ``mongodb://`` (or ``mongodb+srv://``) URL."""
    path = Path(credentials_file).expanduser()
    parser = _open_ini(path, "db_credentials file")
    if not parser.has_section("Credentials"):
        raise ConfigError(f"{path}: no [Credentials] section")
    values = {}
    for key in ("user", "password", "host", "port"):
        if not parser.has_option("Credentials", key):
            raise ConfigError(f"{path} [Credentials] {key}: missing (required key)")
        values[key] = parser.get("Credentials", key).strip()
    is_srv = parser.get("Connection", "is_srv", fallback="False").strip().lower() == "true"
    options = parser.get("Connection", "options", fallback="").strip()
    auth = f"{quote_plus(values['user'])}:{quote_plus(values['password'])}@"
    if is_srv:
        url = f"mongodb+srv://{auth}{values['host']}/{db_name or ''}"
    else:
        if not values["port"].isdigit():
            raise ConfigError(
                f"{path} [Credentials] port: expected a port number, got {values['port']!r}"
            )
        url = f"mongodb://{auth}{values['host']}:{values['port']}/{db_name or ''}"
    return f"{url}?{options}" if options else url


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


def experiment_base(setup_dir: str | Path) -> Path:
    """BASE of a setup folder ``BASE/EXPERIMENT/0X_stage/setup_...`` (``/`` for shallow paths)."""
    parents = Path(setup_dir).resolve().parents
    return parents[min(2, len(parents) - 1)]


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
