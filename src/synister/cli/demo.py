"""``synister demo``: the whole workflow on a synthetic dataset, in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import options as opt


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: opt.Out = Path("demo_out"),
        preset: opt.Preset = "easy",
        network: Annotated[
            str, typer.Option(help="resnet (ResNet-18) or vgg (a small VGG).")
        ] = "resnet",
        minutes: Annotated[
            float | None,
            typer.Option(
                help="Training wall-time budget in minutes (the fafb preset's default: 30), "
                "pretraining included: a timed warm-up plans the iterations, and the plan "
                "follows the pace after each checkpoint."
            ),
        ] = None,
        iterations: Annotated[
            int | None,
            typer.Option(
                help="Training iterations (default: the recipe's, or what --minutes allows)."
            ),
        ] = None,
        seed: opt.Seed = 0,
        resume: Annotated[
            bool,
            typer.Option("--resume", help="Continue a demo that was stopped, in the same --out."),
        ] = False,
        device: opt.Device = None,
    ) -> None:
        """Generate a synthetic dataset, import it, split it, train, validate over several
        iterations, test the best one and compare with the generator's two ceilings (the Bayes
        oracle of the latent features and the image-level ceiling).

        Writes OUT/summary.json and HTML reports (easy preset: minutes on 2 CPU cores).
        """
        from ..demo import recipe, run_demo

        try:
            settings = recipe(preset, network, seed=seed, minutes=minutes, iterations=iterations)
            run_demo(out, settings, device=device, resume=resume)
        except (FileExistsError, ValueError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
