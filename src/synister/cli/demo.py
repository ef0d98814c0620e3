"""``synister demo``: the whole workflow on a synthetic dataset, in one command."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Path = typer.Option(
            Path("demo_out"), "--out", help="Folder for everything the demo makes."
        ),
        preset: str = typer.Option(
            "easy",
            help="Synthetic preset: easy (minutes on 2 cores) or fafb (FAFB-like ceilings; "
            "30 minutes of training unless --minutes).",
        ),
        network: str = typer.Option("resnet", help="resnet (ResNet-18) or vgg (a small VGG)."),
        minutes: float = typer.Option(
            None,
            help="Training wall-time budget (pretraining included): a timed warm-up plans "
            "the iterations, and the plan follows the pace after each checkpoint.",
        ),
        iterations: int = typer.Option(
            None, help="Training iterations (default: the recipe's, or what --minutes allows)."
        ),
        seed: int = typer.Option(0, help="Seed of the dataset, split and training."),
        resume: bool = typer.Option(
            False, "--resume", help="Continue a demo that was stopped, in the same --out."
        ),
        device: str = typer.Option(None, help="torch device (default: a GPU if any, else CPU)."),
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
