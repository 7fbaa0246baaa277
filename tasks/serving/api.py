"""The LitAPI each inference worker runs. LitServe groups up to serve.max_batch_size requests (waiting at most
serve.batch_timeout_ms) and hands them to `predict` together: their rows go through the production model in one
call, as `tuneline predict` runs a file, and each request gets its own answers back.

Requests arrive checked (guard.py), so decoding cannot fail on a user's input. A batch runs on one version from start
to end (models.py). A logged share of the answered rows goes to the traffic logger (traffic.py).
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import litserve as ls

from tasks.kinds.base import InputLimits


class TunelineAPI(ls.LitAPI):
    def __init__(self, production: str, status_dir: str, limits: InputLimits, max_batch_size: int,
                 batch_timeout_s: float, workers: int, log_share: float, check_s: float, precision: str = "auto"):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout_s, api_path="/predict")
        self.production, self.status_dir, self.limits = production, status_dir, limits
        self.workers, self.log_share, self.check_s, self.precision = workers, log_share, check_s, precision

    def setup(self, device) -> None:
        import torch

        from tasks.engine.device import physical_cores
        from tasks.orchestration.signals import ignore_terminal_interrupt
        from tasks.serving.models import ProductionModel

        ignore_terminal_interrupt()  # a spawned worker: the main process stops it
        if str(device) == "cpu":  # the workers share the cores: oversubscribed threads make each one slower
            torch.set_num_threads(max(1, physical_cores() // self.workers))
        self.rng = random.Random(os.getpid())
        self.model = ProductionModel(Path(self.production), Path(self.status_dir), batch_size=64,
                                     check_s=self.check_s, worker=str(os.getpid()), precision=self.precision)
        self.model.start()

    def decode_request(self, request: dict, **kwargs) -> dict:
        kind = self.model.for_batch().predictor.kind
        inputs = [kind.request_input(value, f"inputs[{i}]", self.limits) for i, value in enumerate(request["inputs"])]
        return {"request_id": request["request_id"], "inputs": inputs}

    def batch(self, inputs: list[dict]) -> list[dict]:
        return inputs

    def predict(self, requests: list[dict], **kwargs) -> list[dict]:
        import pandas as pd

        from tasks.serving import metrics

        loaded = self.model.for_batch()  # taken once: the whole batch runs on this version
        kind, predictor = loaded.predictor.kind, loaded.predictor
        frames = [kind.request_rows(r["inputs"]) for r in requests]
        frame = pd.concat(frames, ignore_index=True)
        answers = predictor.answer(frame)
        metrics.BATCH_REQUESTS.observe(len(requests))
        metrics.BATCH_ROWS.observe(len(frame))
        out, start = [], 0
        for request, part in zip(requests, frames):
            out.append({"predictions": answers[start:start + len(part)], "model_version": loaded.version,
                        "request_id": request["request_id"]})
            start += len(part)
        self.log_traffic(kind, frame, frames, out)
        return out

    def log_traffic(self, kind, frame, frames, out: list[dict]) -> None:
        """A share of the answered requests, as rows: the kind's input columns, the answer, version, id, time."""
        if self.log_share <= 0:
            return
        inputs = [c for c in kind.columns if c in frame.columns and c != kind.label_column]
        rows, start, now = [], 0, time.time()
        for part, answer in zip(frames, out):
            if self.rng.random() < self.log_share:
                for i, prediction in enumerate(answer["predictions"]):
                    row: dict[str, Any] = {c: frame[c].iloc[start + i] for c in inputs}
                    row.update(request_id=answer["request_id"], index=i, model_version=answer["model_version"],
                               prediction=logged_prediction(prediction),
                               confidence=prediction.get("score") if "label" in prediction else None, time=now)
                    rows.append(row)
            start += len(part)
        if rows:
            self.log("traffic", rows)

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: dict, **kwargs) -> dict:
        return output


def logged_prediction(answer: dict) -> str:
    """One answer as the traffic log's prediction column: the label, the score (regression) or the tags (tokens)."""
    if "label" in answer:
        return str(answer["label"])
    if "score" in answer:
        return f"{answer['score']:.6g}"
    return " ".join(answer.get("tags", []))
