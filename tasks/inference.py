"""Inference with a saved model of any task kind: the loaded-model object that stage `predict`, evaluate, the gate,
the reference profile, drift monitoring and the model server share.

The model directory says which kind made it (tuneline.json); the kind encodes the rows (texts, word lists, images),
predicts in batches under inference mode and names the labels. Text truncation follows the tokenizer's
model_max_length, as `transformers.pipeline(..., truncation=True)` does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from tasks.engine.device import choose_precision, physical_cores, pick_device
from tasks.files.weights import verify_weights
from tasks.kinds import kind_of_model
from tasks.kinds.base import Predicted, is_labelled


class Predictor:
    """A loaded model and its processor (tokenizer or image processor), with its kind's way of predicting."""

    def __init__(self, model_dir: str | Path, max_length: Optional[int] = None, batch_size: int = 64,
                 num_threads: Optional[int] = None, int8: bool = False, precision: str = "auto"):
        import torch

        from tasks.engine.modeling import load_classifier

        if num_threads or torch.get_num_threads() > physical_cores():  # one thread per physical core at most
            torch.set_num_threads(num_threads or physical_cores())
        verify_weights(Path(model_dir).resolve())  # a registered version loads only as it was promoted
        self.model_dir = Path(model_dir)
        self.kind = kind_of_model(model_dir)
        self.device = pick_device()
        self.processor = self.kind.load_processor(str(model_dir))
        self.model = load_classifier(model_dir, self.kind.auto_class).to(self.device)
        if int8:  # dynamic int8 Linear layers: faster on CPU, at a small accuracy cost (see benchmarks/)
            self.model = torch.ao.quantization.quantize_dynamic(self.model.cpu(), {torch.nn.Linear}, dtype=torch.qint8)
            self.device = torch.device("cpu")
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.max_length = max_length
        self.batch_size = batch_size
        # bf16 autocast where the hardware runs it natively (the same rule as training); int8 is its own arithmetic.
        self.precision = choose_precision("fp32" if int8 else precision, self.device,
                                          kind_allows_bf16=self.kind.bf16_ok)
        linear_weights_in(self.model, self.precision.dtype)

    def predict(self, frame: pd.DataFrame, embeddings: bool = False, desc: str = "predict") -> Predicted:
        """Canonical rows (text | tokens | image) -> predictions as label names, unit probabilities, embeddings."""
        with self.precision.autocast(self.device):
            return self.kind.predict(self.model, self.processor, frame, self.labels, self.batch_size, self.device,
                                     embeddings=embeddings, desc=desc, max_length=self.max_length)

    def answer(self, frame: pd.DataFrame) -> list[dict]:
        """Per row, the JSON answer the model server returns (the kind's `answers`, from the same predictions as
        `tuneline predict`)."""
        frame = frame.reset_index(drop=True)
        return self.kind.answers(self.predict(frame, desc="serve"), self.labels, frame)

    def probabilities(self, texts: list[str], desc: str = "predict") -> np.ndarray:
        """Per-row class probabilities for texts (text classification)."""
        return self.predict(pd.DataFrame({"text": texts}), desc=desc).unit_probs

    def profile(self, frame: pd.DataFrame, desc: str = "profile") -> pd.DataFrame:
        """Drift profile rows (descriptors, predictions, confidence, embeddings) for canonical rows."""
        return self.profile_and_live(frame, desc)[0]

    def profile_and_live(self, frame: pd.DataFrame, desc: str = "profile") -> tuple[pd.DataFrame, Optional[dict]]:
        """The profile, and on labelled rows the model's scores as its kind measures them (one pass)."""
        frame = frame.reset_index(drop=True)
        predicted = self.predict(frame, embeddings=True, desc=desc)
        live = None
        if is_labelled(self.kind, frame):
            live = self.kind.scores(self.kind.truth(frame), predicted.rows, self.labels)
        return self.kind.profile(predicted, frame, self.labels, self.processor), live


def linear_weights_in(model, dtype) -> None:
    """Under bf16/fp16 autocast each Linear casts its fp32 weight and bias on every call. A model that only predicts
    keeps them in that dtype already: the values autocast would use, so the answers are identical (checked: max
    probability difference 0.0), without the casts (MiniLM-L6 on CPU, batches of 16: 4% faster). LayerNorm and the
    embeddings stay fp32, as autocast runs them. dtype None (fp32): nothing changes."""
    import torch

    if dtype is None:
        return
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.to(dtype)
