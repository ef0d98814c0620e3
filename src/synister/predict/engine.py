"""The one prediction engine: batches of uint8 patches -> network -> class probabilities -> sink.

Every front-end (the database run of ``synister predict``, ``predict-positions``, the blockwise
whole-dataset runner, the service, ``explain``) builds one :class:`Predictor` of a loaded model
(:meth:`Predictor.from_model`) and hands it a source of patches: positions on a
:class:`~synister.volumes.Volume` (read ahead by a thread or by reading processes, see
:mod:`synister.predict.ring`), or patches already in memory. The predictor hands
``(ids, probabilities)`` of each batch to a sink callable; a sink that blocks (a bounded
writer) holds the network back. As in nnU-Net v2's predictor: one object per loaded model,
several entry points feeding one read -> predict -> export pipeline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..volumes import Volume, normalize
from .ring import RingReader
from .sources import PatchBatches, array_batches, read_ahead
from .threads import ThreadTuner

if TYPE_CHECKING:
    from ..models import LoadedModel

#: network precision: fp32 (default: the same numbers as on the CPU and in the original),
#: fp16 (GPU autocast) or bf16 (autocast on GPU or CPU)
PRECISIONS = ("fp32", "fp16", "bf16")
_AUTOCAST = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}

#: ``sink(ids (B,) int64, probabilities (B, C) float32)``, called once per batch in order
Sink = Callable[[np.ndarray, np.ndarray], None]
#: test-time augmentation: ``tta(network, x)`` with ``x`` the normalised batch (B, 1, Z, Y, X)
#: returns logits (B, C) averaged over its transforms (e.g. the 8 in-plane flips/transposes)
Augmenter = Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor], torch.Tensor]


def choose_device(requested: str | torch.device | None, rank: int = 0) -> torch.device:
    """``requested``, else GPU ``rank`` (round robin) when there are GPUs, else the CPU."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device(f"cuda:{rank % torch.cuda.device_count()}")
    return torch.device("cpu")


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse an unknown precision, and fp16 on the CPU: CPU float16 kernels are slow or
    missing, and running bf16 instead would give other numbers than asked for."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 needs a GPU; on the CPU use fp32 (the default) or bf16")


def network_input(raw: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 patches to the network's float32 input in [-1, 1] on ``device``.

    Readers hand over uint8, normalised only here: float32 would move 4x the bytes between
    processes (and to a GPU).
    """
    if device.type == "cpu":
        return torch.from_numpy(normalize(raw.numpy()))
    return normalize(raw.to(device, non_blocking=True))


class Predictor:
    """A loaded network and how to run it: batches of uint8 patches in, probabilities out.

    ``model`` takes (B, 1, Z, Y, X) float32 in [-1, 1] (see :func:`network_input`) and returns
    logits (B, len(classes)); it is moved to ``device`` (default: a GPU when present) and put
    in eval mode. ``input_shape_vox`` (z, y, x) is the patch it was trained on. ``precision``
    is one of :data:`PRECISIONS`; ``threads`` sets torch's intra-op threads during a run (None:
    as they are); ``read_workers`` reading processes read volume patches ahead (0: a thread).
    ``temperature`` divides the logits before the softmax (calibration); ``tta`` replaces the
    plain forward pass (see :data:`Augmenter`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        input_shape_vox: Sequence[int],
        classes: Sequence[str],
        *,
        device: str | torch.device | None = None,
        batch_size: int = 32,
        precision: str = "fp32",
        threads: int | None = None,
        read_workers: int = 0,
        temperature: float | None = None,
        tta: Augmenter | None = None,
    ):
        self.device = choose_device(device)
        check_precision(precision, self.device)
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if read_workers < 0:
            raise ValueError(f"read workers must be >= 0, got {read_workers}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if temperature is not None and not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        shape = tuple(int(s) for s in input_shape_vox)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"input_shape_vox must be 3 positive voxel counts, got {shape}")
        self.model = model.to(self.device).eval()
        self.input_shape_vox = shape
        self.classes = list(classes)
        self.batch_size = int(batch_size)
        self.precision = precision
        self.threads = threads
        self.read_workers = int(read_workers)
        self.temperature = None if temperature is None else float(temperature)
        self.tta = tta

    @classmethod
    def from_model(
        cls, loaded: LoadedModel, *, network: torch.nn.Module | None = None, **options
    ) -> Predictor:
        """The predictor of a loaded model (:func:`synister.models.load_model`): its network
        (``network`` replaces it, e.g. a custom one), input shape, classes and temperature
        (``temperature=`` in ``options`` replaces it; None: raw softmax). ``options`` are
        those of the constructor."""
        options.setdefault("temperature", loaded.temperature)
        model = network if network is not None else loaded.build("cpu")
        return cls(model, loaded.input_shape_vox, loaded.classes, **options)

    def describe(self) -> dict:
        """What determines the numbers (for run metadata and reports), JSON-able."""
        return {
            "classes": list(self.classes),
            "input_shape_vox": list(self.input_shape_vox),
            "precision": self.precision,
            "temperature": self.temperature,
            "tta": None if self.tta is None else getattr(self.tta, "__name__", "custom"),
        }

    # -- one batch ------------------------------------------------------------------------

    def logits(self, raw: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, float32, on the device) of uint8 patches (B, 1, Z, Y, X), divided by
        the temperature where there is one."""
        x = network_input(raw, self.device)
        dtype = _AUTOCAST[self.precision]
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            logits = self.model(x) if self.tta is None else self.tta(self.model, x)
        logits = logits.float()
        if logits.dim() != 2 or logits.shape[1] != len(self.classes):
            raise ValueError(
                f"the network returned logits of shape {tuple(logits.shape)}, expected "
                f"({len(raw)}, {len(self.classes)}) for the classes {', '.join(self.classes)}"
            )
        if self.temperature is not None:
            logits = logits / self.temperature
        return logits

    def probabilities(self, raw: torch.Tensor | np.ndarray) -> np.ndarray:
        """Softmax probabilities (B, C) float32 of uint8 patches (B, 1, Z, Y, X)."""
        with torch.inference_mode():
            return torch.softmax(self.logits(torch.as_tensor(raw)), dim=1).cpu().numpy()

    # -- entry points ---------------------------------------------------------------------

    def predict_batches(
        self,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
        sink: Sink,
        *,
        on_computed: Callable[[int], None] | None = None,
        tuner: ThreadTuner | None = None,
    ) -> int:
        """Hand ``(ids, probabilities)`` of every ``(ids, uint8 patches)`` batch to ``sink``;
        ``on_computed(n)`` after each batch's network pass. Returns the number predicted."""
        count = 0
        with self._thread_count(), torch.inference_mode():
            for ids, raw in batches:
                probabilities = torch.softmax(self.logits(raw), dim=1).cpu().numpy()
                if on_computed is not None:
                    on_computed(len(ids))
                sink(np.asarray(ids), probabilities)
                count += len(ids)
                if tuner is not None:
                    tuner.step()
        return count

    def predict_volume(
        self,
        volume: Volume,
        ids: np.ndarray,
        centers_nm: np.ndarray,
        sink: Sink,
        *,
        on_computed: Callable[[int], None] | None = None,
        tune_threads: bool = False,
    ) -> int:
        """Predict the patches of ``volume`` at ``centers_nm`` (N, 3; z, y, x nm; zero-padded
        outside), ``batch_size`` at a time, in the given order (with several reading
        processes: each a contiguous run of it, see :class:`PatchBatches`); ``ids`` (N,)
        int64 go to the sink with them. With ``tune_threads`` a long run on the CPU tries
        one torch thread fewer (see :class:`~synister.predict.threads.ThreadTuner`)."""
        volume.require_uint8()
        batches = PatchBatches(
            volume, ids, centers_nm, self.input_shape_vox, self.batch_size,
            streams=max(1, self.read_workers),
        )  # fmt: skip
        if len(batches) == 0:
            return 0
        tuner = None
        with self._thread_count():
            threads = torch.get_num_threads()
            if tune_threads and self.device.type == "cpu" and threads > 1:
                tuner = ThreadTuner([threads, threads - 1], len(batches))
            if self.read_workers:
                loader = RingReader(batches, self.read_workers, preload=PatchBatches.__module__)
            else:
                loader = read_ahead(batches)
            count = self.predict_batches(loader, sink, on_computed=on_computed, tuner=tuner)
            if tuner is not None and tuner.chosen is not None:
                self.threads = tuner.chosen
        return count

    def predict_patches(
        self,
        ids: np.ndarray,
        patches: np.ndarray | torch.Tensor,
        sink: Sink,
        *,
        on_computed: Callable[[int], None] | None = None,
    ) -> int:
        """Predict uint8 patches (N, Z, Y, X) already in memory (e.g. cut out of one block
        array by a blockwise runner), ``batch_size`` at a time, with their ``ids``."""
        return self.predict_batches(
            array_batches(ids, patches, self.batch_size), sink, on_computed=on_computed
        )

    @contextlib.contextmanager
    def _thread_count(self):
        """torch threads set to ``self.threads`` for the duration, restored after."""
        previous = torch.get_num_threads()
        if self.threads is not None and self.threads != previous:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)
