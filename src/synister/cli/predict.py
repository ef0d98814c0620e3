"""``synister predict``: predict the split part of one or more predict setups into the database."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..db import DatabaseError


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict(
        setups: list[Path] = typer.Argument(
            None,
            help="Predict setup folders (03_predict/setup_t<ID>_p<N>); default: the working folder.",
        ),
        device: str = typer.Option(None, help="torch device, e.g. cpu or cuda:0 (default: a GPU if any)."),
        block_workers: int = typer.Option(
            None, help="Processes sharing the synapses (default: num_block_workers of worker_config.ini)."
        ),
        read_workers: int = typer.Option(None, help="Patch-reading processes per block worker."),
        as_json: bool = typer.Option(False, "--json", help="Print the results as one JSON document."),
    ) -> None:
        """Store softmax probabilities for every synapse of the setup's split part.

        The run is stored as <db_name>_predictions.<split>_<experiment>_t<train>_p<predict>. A
        complete run aborts unless predict_config.ini says overwrite = True; an interrupted run
        resumes and predicts only what is missing.
        """
        from ..predict import predict_setup

        results = []
        for setup in setups or [Path.cwd()]:
            try:
                result = predict_setup(
                    setup, device=device, block_workers=block_workers, read_workers=read_workers
                )
            except (DatabaseError, FileNotFoundError, ValueError) as e:
                typer.echo(f"error: {setup}: {e}", err=True)
                raise typer.Exit(1) from None
            results.append(result)
            if not as_json:
                typer.echo(
                    f"{result['run']}: {result['predicted']} predicted "
                    f"({result['resumed_from']} were stored before), "
                    f"{result['synapses_per_second']:.1f} synapses/s",
                    err=True,
                )
        if as_json:
            typer.echo(json.dumps(results))
