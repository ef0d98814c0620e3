"""synister: neurotransmitter classification of Drosophila synapses from 3D electron microscopy.

For notebooks: ``synister.load_model(path)`` loads a model bundle, a training setup's checkpoint
or a checkpoint file (see :func:`synister.models.resolve.load_model`);
``synister.predict_positions(bundle, volume, table)`` returns a per-synapse DataFrame and
``synister.summarize_neurons(df)`` the per-neuron one. They are imported on first use, so that
``import synister`` stays quick (torch loads only when needed).
"""

__version__ = "0.1.0"

_LAZY = {
    "load_model": "synister.models.resolve",
    "predict_positions": "synister.predict.positions",
    "summarize_neurons": "synister.predict.neurons",
    "evaluate_table": "synister.evaluate.table",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'synister' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
