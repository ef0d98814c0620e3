"""The one-command demo: the whole seed workflow on a synthetic preset, on CPU.

generate -> import into SQLite -> skeleton split -> prepare-training -> train ->
prepare-prediction on validation for several iterations -> predict -> evaluate -> pick the best
iteration and calibrate it (temperature, unclear thresholds) -> predict the test part ->
evaluate -> compare with the generator's two ceilings: the Bayes oracle of the latent features
and the image-level ceiling (the same classifier of features measured back from the images).
Every step is the same code the ``synister`` commands run; the demo only chooses settings
(:func:`recipe`). With ``minutes`` the training iterations come from a timed warm-up, and
``resume`` continues a demo that was stopped.
"""

from .budget import checkpoint_spacing, planned_iterations
from .run import run_demo, train_demo
from .settings import NETWORKS, RECIPES, DemoSettings, recipe

__all__ = [
    "NETWORKS",
    "RECIPES",
    "DemoSettings",
    "checkpoint_spacing",
    "planned_iterations",
    "recipe",
    "run_demo",
    "train_demo",
]
