"""What a person watching the Prefect UI sees of a DVC stage: its output lines in the task run's log, and its
progress bars as one progress artifact per stage (for `train`, overall progress across epochs).

The stage itself runs in a `dvc repro` subprocess (tasks/orchestration/pipeline.py); this module only listens to
its output. Used inside a Prefect task run (flows/training.py).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional
from uuid import UUID

from tasks.orchestration import pipeline

EPOCH = re.compile(r"^train epoch (\d+)/(\d+)$")
STEP = 0.05  # update the artifact every 5 % (and at the end), not on every bar tick


def api_only_logger() -> logging.Logger:
    """A logger whose records go to the Prefect API (the UI) only: the terminal already shows the stage's own output,
    so the console handler of Prefect's run logger would print every line twice."""
    from prefect.logging.handlers import APILogHandler

    logger = logging.getLogger("tuneline.stage")
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):
        logger.addHandler(APILogHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class StageReporter:
    def __init__(self, stage: str):
        self.stage, self.logger = stage, api_only_logger()
        self.artifact: Optional[UUID] = None
        self.shown = -1.0

    def line(self, text: str) -> None:
        self.logger.info(text)

    def progress(self, desc: str, fraction: float) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        epoch = EPOCH.match(desc)
        overall = (int(epoch[1]) - 1 + fraction) / int(epoch[2]) if epoch else fraction
        if abs(overall - self.shown) < STEP and fraction < 1.0:
            return
        self.shown = overall
        description = f"stage {self.stage}: {desc} ({fraction:.0%})"
        if self.artifact is None:
            self.artifact = create_progress_artifact(overall * 100, description=description)
        else:
            update_progress_artifact(self.artifact, overall * 100, description=description)


def reproduce_stage_reported(stage: str, project_dir: str | Path = ".") -> pipeline.StageRun:
    """`pipeline.reproduce_stage`, with the stage's lines in the run's log and its progress in the UI."""
    reporter = StageReporter(stage)
    return pipeline.reproduce_stage(stage, project_dir, on_line=reporter.line, on_progress=reporter.progress)
