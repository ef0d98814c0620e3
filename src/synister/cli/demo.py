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
        seed: int = typer.Option(0, help="Seed of the dataset, split and training."),
        iterations: int = typer.Option(None, help="Training iterations (default: the demo's own)."),
        device: str = typer.Option(None, help="torch device (default: a GPU if any, else CPU)."),
    ) -> None:
        """Generate the synthetic 'easy' dataset, import it, split it, train, validate over several
        iterations, test the best one and compare with the generator's Bayes oracle.

        Writes OUT/summary.json and an HTML report; takes a few minutes on 2 CPU cores.
        """
        from dataclasses import replace

        from ..demo import DemoSettings, run_demo

        try:
            settings = DemoSettings(seed=seed)
            if iterations:
                settings = replace(settings, iterations=iterations)
            run_demo(out, settings, device=device)
        except (FileExistsError, ValueError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
