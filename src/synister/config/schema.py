"""The typed configs of the setup folders: training (``[Training]``) and prediction
(``[Predict]``), with the network, data and database fields they share."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from synister import nt
from synister.layout import PREDICT_FILE, TRAIN_FILE, checkpoint_iteration

from .database import mongo_url_from_credentials, url_with_database
from .ini import ConfigError, _IniModel, _plain, value_to_text


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
        return checkpoint_iteration(self.train_checkpoint)
