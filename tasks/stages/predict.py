"""Stage `predict` (`tuneline predict`): batch prediction for a file with a saved model of any task kind.

The kind reads the input (texts, word lists, image paths) and names the output columns (label and per-class
probabilities; entities with character spans; label and probabilities per image). Rows come back in input order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tasks.files.tables import write_table
from tasks.inference import Predictor
from tasks.kinds import kind_of_model


@dataclass(frozen=True)
class PredictResult:
    rows: int
    output: Path
    labels: list[str]


def run(input_path: str | Path, output_path: str | Path, model_dir: str | Path, column: Optional[str] = None,
        batch_size: int = 64, max_length: Optional[int] = None, int8: bool = False,
        precision: str = "auto") -> PredictResult:
    input_path, output_path = Path(input_path), Path(output_path)
    if not Path(model_dir).exists():
        raise FileNotFoundError(f"{model_dir}: no model here (train and promote one first: tuneline run)")
    kind = kind_of_model(model_dir)
    df = kind.read_predict_input(input_path, column)
    predictor = Predictor(model_dir, max_length, batch_size, int8=int8, precision=precision)
    predicted = predictor.predict(df)
    out = df.copy()
    for name, values in kind.prediction_columns(predicted, predictor.labels, df).items():
        out[name] = values
    write_table(out.drop(columns=df.attrs.get("internal", [])).rename(columns=df.attrs.get("restore", {})),
                 output_path)
    return PredictResult(rows=len(out), output=output_path, labels=predictor.labels)
