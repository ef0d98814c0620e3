"""synister.submit and ``--submit``/``--local``: jobs go through worker_config.ini's template,
which here is a real local shell command (bash writing what it got, then running the job)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from synister.cli import app
from synister.config import WorkerConfig, load_train_setup
from synister.models import build_model, save_checkpoint
from synister.setup import prepare_prediction, prepare_training
from synister.submit import synister_argv

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("warm_executable")]  # warm jobs

TEMPLATE = "bash -c 'echo {queue} {num_cpus} {job_name} > submitted.txt; {command} > job.log 2>&1'"


@pytest.fixture
def setup(tmp_path):
    setup = prepare_training(
        tmp_path,
        "e",
        0,
        check_volume=False,
        db_url="sqlite:///x.db",  # relative to BASE: tmp_path
        network="ResNet18",
        fmaps=2,
        input_shape=(4, 16, 16),
        downsample_factors=[(1, 2, 2)],
        queue="short",
        num_cpus=3,
        submit_command=TEMPLATE,
    )
    cfg, _ = load_train_setup(setup)
    save_checkpoint(setup / "model_checkpoint_10", build_model(cfg), None, 10)
    return setup


def test_train_submit_runs_the_template_and_the_job_runs_train_here(setup):
    result = CliRunner().invoke(app, ["train", "5", "--setup", str(setup), "--submit"])
    assert result.exit_code == 0, result.output
    assert "submitted: bash -c" in result.output
    assert (setup / "submitted.txt").read_text() == "short 3 train-setup_t0\n"
    log = (setup / "job.log").read_text()  # the job's own output: `synister train ... --local`
    assert "nothing to do: the newest checkpoint is already at iteration 10" in log


def test_a_local_run_with_a_queue_set_asks_which_is_meant(setup):
    runner = CliRunner()
    result = runner.invoke(app, ["train", "5", "--setup", str(setup)])
    assert result.exit_code == 1
    assert "sets submit_command = bash -c" in result.output and "queue = short" in result.output
    assert "run with --submit to submit, or with --local to run on this machine" in result.output
    result = runner.invoke(app, ["train", "5", "--setup", str(setup), "--local"])
    assert result.exit_code == 0 and "nothing to do" in result.output
    result = runner.invoke(app, ["train", "5", "--setup", str(setup), "--local", "--submit"])
    assert result.exit_code == 1 and "exclude each other" in result.output


def test_predict_submit_passes_options_and_the_jobs_failure_on(setup, tmp_path):
    [predict_setup] = prepare_prediction(tmp_path, "e", 0, [10], True, check_volume=False)
    result = CliRunner().invoke(app, ["predict", str(predict_setup), "--submit", "--threads", "1"])
    assert result.exit_code == 1  # the job failed (no volume, no split); its status comes back
    assert "the submission exited with status 1" in result.output
    assert (predict_setup / "submitted.txt").read_text() == "short 3 predict-setup_t0_p0\n"
    assert f"error: {predict_setup.resolve()}: " in (predict_setup / "job.log").read_text()
    assert "--threads 1 --local" in result.output


def test_jobs_in_a_container_run_the_containers_python():
    inside = WorkerConfig(singularity_container="/img/s.sif")
    assert synister_argv(inside, ["train", "1"]) == ["python", "-m", "synister", "train", "1"]
    assert synister_argv(WorkerConfig(), ["x"])[1:] == ["-m", "synister", "x"]
