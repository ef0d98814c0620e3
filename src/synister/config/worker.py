"""``[Worker]`` of ``worker_config.ini``: compute resources and the job submission template."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from synister.layout import WORKER_FILE

from .ini import ConfigError, _IniModel, value_to_text

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
