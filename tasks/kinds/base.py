"""The seam between the shared pipeline and what differs per task kind.

Stages, flows, the gate, the registry, inference and monitoring hold a `Kind` and call it; none of them asks which
kind it is. A kind has two roles, as Lightning splits a data module from a model module:

- data: reading a source into canonical rows, its row rules, how rows group and stratify for splitting, encoding rows
  into model inputs (`read_source` ... `encode`);
- model: its transformers auto class (as a `transformers.pipeline` task name pairs with an `AutoModelFor*` class),
  its default model, the split the engine trains on, predictions, metrics, baseline, prediction output and drift
  profile (`auto_class` ... `profile`);
- serving: a request's inputs checked and made rows, the JSON answers, and logged traffic written back as a batch
  file (`request_input` ... `write_batch`).

Every method below is abstract: a kind states each one, with these signatures (tests/test_kinds.py checks that they
match). What one-label-per-row kinds share lives in `labelled.py`; what every kind shares is a plain function here.
Canonical rows: `row` (1-based source row), `origin` (source or batch id) and the kind's `columns`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Optional, Protocol

import numpy as np
import pandas as pd

from tasks.scoring import higher_is_better

if TYPE_CHECKING:  # typing only: the seam itself imports no torch, transformers or checks code
    import torch

    from tasks.config import DataConfig, EvaluateConfig, GenerateConfig, PreprocessConfig, TrainConfig, ValidateConfig
    from tasks.kinds.diagnostics import Diagnostics
    from tasks.engine.splits import Split

ROW = "row"  # 1-based data row number in the source file, for messages and the quarantine file
ORIGIN = "origin"  # "source" (the configured dataset) or the id of an ingested batch in the training pool
SOURCE_ORIGIN = "source"
LABEL = "label"
PRED, CONFIDENCE = "predicted_label", "confidence"  # profile columns every kind fills (drift)
EMB_PREFIX = "emb_"


class BadInput(ValueError):
    """A request input the model server refuses: an HTTP status (400, 413, 422) and a message naming the field and,
    for a limit, the setting."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TokenBudget:
    """What a row must fit into, for the rules that count tokens (a generation prompt must leave room for its
    answer): the model whose tokenizer counts (train.model) and preprocess.max_length."""
    model: str
    max_length: int


@dataclass(frozen=True)
class InputLimits:
    max_text_chars: int
    max_image_pixels: int


class RowMarker(Protocol):
    """How a kind's row rules mark rows (tasks/checks.py implements it): each row keeps the first rule it breaks."""
    live: pd.Series  # rows no rule has marked yet

    def __call__(self, mask: pd.Series, name: str, why: Any) -> None:
        """Mark the live rows of `mask` with rule `name` and detail `why` (a string, or a Series per row)."""

    def conflicting(self, key: pd.Series, label: pd.Series) -> None:
        """Every copy of a key seen with different labels."""

    def duplicates(self, key: pd.Series, name: str, template: str) -> None:
        """Rows whose key repeats an earlier live row's; `{first}` in the template names that row."""


class RequiredColumn(NamedTuple):
    canonical: str   # the kind's column name (text, label, tokens, ...)
    param: str       # the params key that names the user's column (data.text_column, ...)
    configured: str  # the user's column name


@dataclass
class Predicted:
    """A model's predictions on canonical rows.

    rows: one entry per input row, as label names (a name per row, or a list of tag names per row for tokens).
    unit_probs: class probabilities of the flat units the confusion matrix and calibration read (rows, or words
    for tokens; `Kind.unit_truth` gives their gold labels). embeddings: per row, when asked for.
    """
    rows: np.ndarray
    unit_probs: np.ndarray
    unit_rows: np.ndarray  # which input row each unit belongs to
    embeddings: Optional[np.ndarray] = None
    unit_words: Optional[np.ndarray] = None  # token classification: which word of its row each unit is
    extras: Optional[dict] = None  # per-row figures a kind adds (generation: finish reasons, answer tokens, NLLs)


class Kind(ABC):
    name: ClassVar[str]                       # task.kind, and the transformers pipeline task
    columns: ClassVar[tuple[str, ...]]        # canonical data columns besides row/origin
    label_column: ClassVar[str] = LABEL       # the canonical column of labels (absent in an unlabelled batch)
    min_classes: ClassVar[int] = 2            # a training set needs at least this many classes (class_values)
    auto_class: ClassVar[str]                 # the transformers AutoModelFor... class name
    peft_task: ClassVar[str]                  # PEFT TaskType name for LoRA ("" = none: adapters on named modules)
    baseline_name: ClassVar[str]              # the key of the baseline's scores in evaluate's report
    baseline_description: ClassVar[str]       # the baseline in words
    encoded_columns: ClassVar[tuple[str, ...]]  # model-ready columns a processor made (dropped to re-encode)
    bf16_ok: ClassVar[bool] = True            # precision auto may pick bf16 (False where bf16 was measured to hurt)
    objective: ClassVar[str] = "classification"  # or "regression" / "generation": which losses fit (train.loss)
    cpu_batch_size: ClassVar[int] = 32        # train.batch_size auto on a CPU (sizing.py)
    lora_targets: ClassVar[Optional[str]] = None  # train.lora.target_modules null: None = the family's default
    problem_type: ClassVar[Optional[str]] = None  # transformers' config.problem_type ("regression": no softmax)
    val_metrics: ClassVar[tuple[str, ...]] = ("macro_f1", "accuracy")  # per epoch; early stopping follows the first
    headline: ClassVar[str] = "macro_f1"      # the metric the gate, monitoring and the registry compare by default
    gate_metrics: ClassVar[tuple[str, ...]] = ("macro_f1", "weighted_f1", "accuracy")  # promote.metric choices

    # --- data role ---------------------------------------------------------------------------------------------
    @abstractmethod
    def read_source(self, cfg: DataConfig) -> pd.DataFrame:
        """The configured source (data.path, or the kind's embedded default) as canonical rows with row numbers."""

    @abstractmethod
    def read_file(self, path: Path, cfg: DataConfig) -> pd.DataFrame:
        """A batch file with the user's columns, as canonical rows (no topic filter)."""

    @abstractmethod
    def source_label(self, cfg: DataConfig) -> str:
        """The source in words, for messages and the model card."""

    @abstractmethod
    def required_columns(self, cfg: DataConfig, labelled: bool) -> list[RequiredColumn]:
        """The columns that must be present; the label column last."""

    @abstractmethod
    def row_rules(self, df: pd.DataFrame, data_cfg: DataConfig, cfg: ValidateConfig, allowed: Optional[set[str]],
                  labelled: bool, mark: RowMarker, budget: Optional[TokenBudget] = None) -> dict:
        """Mark rows that break a kind rule (first rule wins); returns report extras (counts of flags). `budget`:
        the tokenizer and length the rows must fit (rules that count tokens; None: skip them)."""

    @abstractmethod
    def clean(self, accepted: pd.DataFrame, labelled: bool) -> pd.DataFrame:
        """Accepted rows as later stages read them (stripped, converted)."""

    @abstractmethod
    def class_values(self, df: pd.DataFrame) -> pd.Series:
        """One value per class occurrence, for class counts and the class rules (labels; entity types)."""

    @abstractmethod
    def display(self, df: pd.DataFrame) -> pd.DataFrame:
        """The quarantine file's data columns (readable in a spreadsheet)."""

    @abstractmethod
    def profile_report(self, accepted: pd.DataFrame) -> dict:
        """Validation report fields describing the accepted data (lengths, sizes)."""

    @abstractmethod
    def group_key(self, df: pd.DataFrame) -> pd.Series:
        """Rows with equal keys are near-duplicates: they land in one split (and leakage is checked on the key)."""

    @abstractmethod
    def strata(self, df: pd.DataFrame) -> pd.Series:
        """A label per row to stratify splits and caps on."""

    @abstractmethod
    def label_set(self, df: pd.DataFrame) -> list[str]:
        """The model's output classes (labels.json)."""

    @abstractmethod
    def augment(self, train: pd.DataFrame, cfg: PreprocessConfig, seed: int) -> pd.DataFrame:
        """Extra training rows made at preprocess time (the `augmented` column marks them)."""

    @abstractmethod
    def encode(self, part: pd.DataFrame, processor: Any, cfg: PreprocessConfig,
               labels: list[str]) -> tuple[pd.DataFrame, dict]:
        """Model-ready columns added to a split's rows, and a short profile of them for the report."""

    # --- model role --------------------------------------------------------------------------------------------
    @abstractmethod
    def default_model(self) -> str:
        """What `train.model: default` resolves to: the kind's packaged pre-trained model, as a local directory."""

    @abstractmethod
    def default_model_description(self) -> str:
        """The packaged default model in words (registry records, model cards)."""

    @abstractmethod
    def load_processor(self, path: str) -> Any:
        """The tokenizer or image processor that comes with a model directory."""

    @abstractmethod
    def saved_processor(self, processor: Any, train: pd.DataFrame) -> Any:
        """The processor saved beside the trained model (the image kind fixes its size to the training crop)."""

    def init_head(self, model: torch.nn.Module, train: pd.DataFrame) -> None:
        """Set up the new head from the training rows before training (a regression starts at their mean)."""

    @abstractmethod
    def split(self, frame: pd.DataFrame, processor: Any, train_cfg: Optional[TrainConfig] = None,
              max_length: Optional[int] = None) -> Split:
        """The engine's view of processed rows (or raw rows, encoded here for inference)."""

    def validation(self, frame: pd.DataFrame, processor: Any, labels: list[str]):
        """What the training loop calls after each epoch (see `validator`): by default the kind's own scores on the
        validation split's predictions; a kind whose predictions are costly (generation) scores its loss instead."""
        return validator(self, frame, processor, labels)

    @abstractmethod
    def truth(self, frame: pd.DataFrame) -> np.ndarray:
        """Per row, the gold label names (a name, or a list of tags)."""

    @abstractmethod
    def predict(self, model: torch.nn.Module, processor: Any, frame: pd.DataFrame, labels: list[str],
                batch_size: int, device: torch.device, embeddings: bool = False, desc: str = "predict",
                max_length: Optional[int] = None) -> Predicted:
        """Predictions for canonical rows, in their order."""

    @abstractmethod
    def unit_truth(self, frame: pd.DataFrame, predicted: Predicted) -> np.ndarray:
        """Gold label names aligned with predicted.unit_probs (for the confusion matrix and calibration)."""

    @abstractmethod
    def scores(self, y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
        """accuracy, macro_f1, weighted_f1, per_class {name: precision, recall, f1-score, support}, + extras."""

    def diagnostics(self, test: pd.DataFrame, predicted: Predicted, labels: list[str],
                    cfg: EvaluateConfig) -> "Diagnostics":
        """What evaluate reports and plots beside the scores: for classifiers, calibration over the kind's units and
        the confusion matrix (a regression kind reports its residuals instead)."""
        from tasks.kinds.diagnostics import classification

        return classification(self.unit_truth(test, predicted), predicted.unit_probs, labels, cfg.calibration_bins)

    @abstractmethod
    def baseline(self, train: pd.DataFrame, test: pd.DataFrame, labels: list[str], cfg: EvaluateConfig, seed: int,
                 base_model: str, generation: Optional[GenerateConfig] = None) -> np.ndarray:
        """Per test row, the baseline's predictions (label names; a generation kind's answers, made with
        `generation`, the candidate's settings)."""

    @abstractmethod
    def read_predict_input(self, path: Path, column: Optional[str]) -> pd.DataFrame:
        """A file to predict on, as canonical rows (attrs: `internal` columns to drop from the output)."""

    @abstractmethod
    def prediction_columns(self, predicted: Predicted, labels: list[str], frame: pd.DataFrame) -> dict[str, Any]:
        """The columns `tuneline predict` adds to the input rows."""

    @abstractmethod
    def profile(self, predicted: Predicted, frame: pd.DataFrame, labels: list[str], processor: Any) -> pd.DataFrame:
        """Drift profile rows: [text], descriptors, [label], predicted_label, confidence, emb_*."""

    # --- serving role ------------------------------------------------------------------------------------------
    @abstractmethod
    def request_input(self, value: Any, field: str, limits: InputLimits) -> Any:
        """One input of a /predict request, checked and decoded (a text; image bytes); BadInput naming `field`."""

    @abstractmethod
    def request_rows(self, inputs: list[Any]) -> pd.DataFrame:
        """Canonical rows for checked inputs: what `read_predict_input` makes of a file's rows."""

    @abstractmethod
    def answers(self, predicted: Predicted, labels: list[str], frame: pd.DataFrame) -> list[dict]:
        """Per row, the JSON answer: label, score and probabilities; or the words, their tags and the entities."""

    @abstractmethod
    def write_batch(self, rows: pd.DataFrame, path: Path, cfg: DataConfig) -> Path:
        """Canonical rows (with or without labels) as a batch file a user would drop: the configured column names,
        so ingest reads it like any batch."""


# --- what every kind shares: plain functions over a kind --------------------------------------------------------------

def is_labelled(kind: Kind, df: pd.DataFrame) -> bool:
    return kind.label_column in df.columns and df[kind.label_column].notna().any()


def read_split(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def raw_rows(kind: Kind, frame: pd.DataFrame) -> pd.DataFrame:
    """Processed rows without what one model's processor made, for scoring another model on them."""
    return frame.drop(columns=[c for c in kind.encoded_columns if c in frame.columns])


def validator(kind: Kind, frame: pd.DataFrame, processor: Any, labels: list[str]):
    """What the training loop calls after each epoch: the kind's own scores on the validation split."""
    truth = kind.truth(frame)

    def validate(model, batch_size: int, device) -> dict:
        predicted = kind.predict(model, processor, frame, labels, batch_size, device, desc="validate")
        s = kind.scores(truth, predicted.rows, labels)
        return {f"val_{m}": s[m] for m in kind.val_metrics}

    validate.metric = kind.val_metrics[0]  # early stopping follows the first, in its direction
    validate.higher_is_better = higher_is_better(kind.val_metrics[0])
    return validate


def profile_tail(out: pd.DataFrame, gold: Optional[pd.Series], predicted_rows: list,
                 confidence, embeddings: Optional[np.ndarray]) -> pd.DataFrame:
    """The profile columns every kind ends with: [label], predicted_label, [confidence], then the embeddings."""
    if gold is not None:
        out[LABEL] = gold.to_numpy()
    out[PRED] = predicted_rows
    if confidence is not None:  # a regression's score has none
        out[CONFIDENCE] = confidence
    return pd.concat([out, embedding_frame(embeddings)], axis=1) if embeddings is not None else out


def rename_to_canonical(df: pd.DataFrame, renames: dict[str, str], also: tuple[str, ...] = ()) -> pd.DataFrame:
    """The user's configured columns renamed to canonical names; a user column already called by a canonical name
    (or `row`, or a column the kind adds later: `also`) that is not the configured one would collide, so it is kept
    as `<name>_original`."""
    reserved = {*renames.values(), ROW, *also}
    clashes = {c: f"{c}_original" for c in reserved if c in df.columns and c not in renames}
    return df.rename(columns=clashes).rename(columns={k: v for k, v in renames.items() if k in df.columns})


def input_and_label(cfg: DataConfig, labelled: bool, input_column: tuple[str, str],
                    label_column: tuple[str, str]) -> list[RequiredColumn]:
    """The required columns of a kind with one input column and one label column, each given as (canonical name,
    the `data.*` key that names the user's column)."""
    wanted = [input_column, label_column] if labelled else [input_column]
    return [RequiredColumn(canonical, f"data.{key}", getattr(cfg, key)) for canonical, key in wanted]


def text_input(value: Any, field: str, limits: InputLimits) -> str:
    """A request's text input: a string within serve.max_text_chars."""
    if not isinstance(value, str):
        raise BadInput(422, f"{field}: a text (a JSON string) is expected, got {type(value).__name__}")
    if len(value) > limits.max_text_chars:
        raise BadInput(413, f"{field}: {len(value):,} characters exceeds serve.max_text_chars="
                            f"{limits.max_text_chars:,}")
    return value


def write_user_columns(kind: Kind, rows: pd.DataFrame, path: Path, cfg: DataConfig) -> Path:
    """Canonical rows renamed to the user's configured columns and written as Parquet (lists stay lists)."""
    from tasks.files.tables import write_parquet

    names = {c.canonical: c.configured for c in kind.required_columns(cfg, labelled=True)}
    keep = [c for c in names if c in rows.columns]
    return write_parquet(rows[keep].rename(columns=names), path)


def number_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The canonical `row` column first: 1-based, the data row a message names."""
    df.insert(0, ROW, range(1, len(df) + 1))
    return df.reset_index(drop=True)


def embedding_frame(emb: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(emb, columns=[f"{EMB_PREFIX}{i}" for i in range(emb.shape[1])])


def read_input_table(path: Path, columns: list[str], what: str) -> tuple[pd.DataFrame, str]:
    """A prediction input table (CSV/Parquet/JSONL) and the first of `columns` it has; an empty file is an empty
    table; when none is there, the message names them and the columns present."""
    from tasks.files.tables import DataFileError, read_table

    df = pd.DataFrame() if path.exists() and path.stat().st_size == 0 else read_table(path)
    found = next((c for c in columns if c in df.columns), columns[0])
    if len(df.columns) and found not in df.columns:
        raise DataFileError(f"{path}: {what} column {' or '.join(map(repr, columns))} is missing; columns present: "
                            f"{', '.join(map(str, df.columns))} (use --column)")
    return df, found
