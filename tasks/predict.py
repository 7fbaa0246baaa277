"""Batch prediction with a saved model: label and per-class probabilities for every row of a CSV/Parquet/JSONL file.

Length-bucketed batches under inference mode; rows come back in input order. Truncation follows the tokenizer's
model_max_length, as `transformers.pipeline(..., truncation=True)` does, so both give the same labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from tasks.batching import TokenizedSplit, pick_device, predict_outputs, predict_proba
from tasks.preprocess import tokenize
from tasks.tables import SUFFIX_FORMATS, DataFileError, csv_text, read_table, write_parquet, write_text

PROB_PREFIX = "prob_"


@dataclass(frozen=True)
class PredictResult:
    rows: int
    output: Path
    labels: list[str]


class Predictor:
    """A loaded model + tokenizer that turns texts into class probabilities."""

    def __init__(self, model_dir: str | Path, max_length: Optional[int] = None, batch_size: int = 64,
                 num_threads: Optional[int] = None, int8: bool = False):
        import torch
        from transformers import AutoTokenizer

        from tasks.modeling import load_classifier

        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = pick_device()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, use_fast=True)
        self.model = load_classifier(model_dir).to(self.device)
        if int8:  # dynamic int8 Linear layers: faster on CPU, at a small accuracy cost (see benchmarks/)
            self.model = torch.ao.quantization.quantize_dynamic(self.model.cpu(), {torch.nn.Linear}, dtype=torch.qint8)
            self.device = torch.device("cpu")
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        limit = self.tokenizer.model_max_length
        self.max_length = max_length or (limit if limit and limit < 100_000 else 512)
        self.batch_size = batch_size

    def probabilities(self, texts: list[str], desc: str = "predict") -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self.split_probabilities(self.tokenized(texts, desc), desc)

    def tokenized(self, texts: list[str], desc: str = "predict") -> TokenizedSplit:
        ids = [x.astype(np.int64) for x in tokenize(texts, self.tokenizer, self.max_length, 1000, desc)]
        return TokenizedSplit(ids, np.zeros(len(ids), dtype=np.int64), np.array([len(x) for x in ids]))

    def probabilities_and_embeddings(self, texts: list[str], desc: str = "profile") -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities and the model's mean-pooled text embeddings, in one pass (for drift monitoring)."""
        return predict_outputs(self.model, self.tokenized(texts, desc), self.tokenizer.pad_token_id or 0,
                               self.batch_size, self.device, desc, embeddings=True)

    def split_probabilities(self, split: TokenizedSplit, desc: str = "predict") -> np.ndarray:
        """For rows already tokenized with this model's tokenizer (preprocess output)."""
        return predict_proba(self.model, split, self.tokenizer.pad_token_id or 0, self.batch_size, self.device, desc)


def read_input(path: Path) -> pd.DataFrame:
    if path.exists() and path.stat().st_size == 0:
        return pd.DataFrame()  # an empty file predicts to an empty output
    return read_table(path)


def write_output(df: pd.DataFrame, path: Path) -> None:
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt == "parquet":
        write_parquet(df, path)
    elif fmt == "jsonl":
        write_text(df.to_json(orient="records", lines=True, force_ascii=False), path)
    elif fmt == "csv":
        write_text(csv_text(df), path)
    else:
        raise DataFileError(f"{path}: unknown output format {path.suffix!r}; use .csv, .parquet or .jsonl")


def run(input_path: str | Path, output_path: str | Path, model_dir: str | Path, text_column: str = "text",
        batch_size: int = 64, max_length: Optional[int] = None, int8: bool = False) -> PredictResult:
    input_path, output_path = Path(input_path), Path(output_path)
    df = read_input(input_path)
    if len(df.columns) and text_column not in df.columns:
        raise DataFileError(f"{input_path}: text column {text_column!r} is missing; columns present: "
                            f"{', '.join(map(str, df.columns))} (use --text-column)")
    predictor = Predictor(model_dir, max_length, batch_size, int8=int8)
    texts = df[text_column].astype(str).tolist() if len(df) else []
    probs = predictor.probabilities(texts)
    out = df.copy() if len(df.columns) else pd.DataFrame({text_column: pd.Series(dtype=str)})
    out["label"] = [predictor.labels[i] for i in probs.argmax(axis=1)] if len(probs) else pd.Series(dtype=str)
    for i, name in enumerate(predictor.labels):
        out[f"{PROB_PREFIX}{name}"] = probs[:, i] if len(probs) else pd.Series(dtype=np.float32)
    write_output(out, output_path)
    return PredictResult(rows=len(out), output=output_path, labels=predictor.labels)
