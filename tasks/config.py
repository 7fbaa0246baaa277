"""Typed view of params.yaml: loaded once, unknown keys and wrong types rejected with the key named."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

# The airline topic of the embedded tweet corpus: the default initial training set (README, "Task kinds").
AIRLINE_PATTERN = r"@united|@americanair|@jetblue|@usairways|@southwestair|@virginamerica"


BATCH_ID = r"^b\d{4}-[0-9a-f]{8}$"  # what BatchStore names a batch: b<NNNN>-<sha8 of its file>


AUTO_MAX_EPOCHS = 10  # train.epochs auto: the budget early stopping works within


class ConfigError(ValueError):
    """params.yaml is not valid; the message names the file and the offending key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# The task kinds: task.kind -> the class that implements it (tasks/kinds/). A new kind is a module there and one line
# here.
KINDS = {
    "text-classification": "tasks.kinds.text:TextKind",
    "token-classification": "tasks.kinds.token:TokenKind",
    "image-classification": "tasks.kinds.image:ImageKind",
    "text-regression": "tasks.kinds.text_regression:TextRegressionKind",
    "text-generation": "tasks.kinds.generation:TextGenerationKind",
}
KIND_NAMES = tuple(KINDS)
Kind = Literal[KIND_NAMES]


class TaskConfig(_Strict):
    kind: Kind = Field("text-classification", description="what is learned (transformers' pipeline task names, and "
                                                          "text-regression: a number per text)")


# What `auto` means for the settings whose good value depends on the task kind (the value for every other kind).
# A causal LM is fine-tuned with LoRA on a CPU (a full step on 135M parameters costs minutes); its rows are a prompt
# and an answer in a chat template, four times a tweet's tokens; each profiled reference row is a generation.
KIND_AUTO = {
    "train.strategy": ("full", {"text-generation": "lora"}),
    "preprocess.max_length": (64, {"text-generation": 256}),
    "preprocess.max_train_samples": (3000, {"text-generation": 320}),
    "preprocess.max_test_samples": (None, {"text-generation": 150}),  # two generation passes: model and base
    "train.max_epochs": (None, {"text-generation": 2}),
    "monitor.reference_rows": (1000, {"text-generation": 100}),
}
# Settings a kind cannot use: (setting, value) -> why.
KIND_REFUSES = {
    "text-generation": {("train.strategy", "head"): "a causal LM has no new head to train alone (its output layer is "
                                                    "the pre-trained one, tied to the embeddings); use lora, full or "
                                                    "gradual"},
}


def kind_auto(kind: str, key: str):
    default, per_kind = KIND_AUTO[key]
    return per_kind.get(kind, default)


class DataConfig(_Strict):
    path: Optional[str] = Field(None, description="file or folder; null = the task kind's embedded default data set")
    format: Literal["auto", "csv", "parquet", "jsonl", "conll", "imagefolder"] = "auto"
    encoding: Optional[str] = Field(None, description="CSV/JSONL encoding; null = detect (latin-1 for the embedded corpus)")
    delimiter: Optional[str] = Field(None, description="CSV delimiter; null = detect among , ; tab |")
    max_bytes: Optional[int] = Field(2_000_000_000, ge=1, description="larger files are refused; null = no limit")
    max_rows: Optional[int] = Field(None, ge=1, description="files with more rows are refused; null = no limit")
    text_column: str = "text"
    label_column: str = "sentiment"
    prompt_column: str = Field("prompt", description="text-generation: the column of prompts (a user turn each)")
    response_column: str = Field("response", description="text-generation: the column of reference answers")
    messages_column: str = Field(
        "messages", description="text-generation: a column of chat turns ([{role, content}, ...], the last one the "
                                "assistant's answer); used instead of prompt/response when the file has it")
    tokens_column: str = Field("tokens", description="token-classification: the column of word lists")
    tags_column: str = Field("tags", description="token-classification: the column of BIO tag lists")
    image_column: str = Field("image", description="image-classification: the column of image paths (CSV/Parquet), "
                                                   "relative to that file's folder")
    max_image_bytes: Optional[int] = Field(
        50_000_000, ge=1, description="image-classification: larger image files are quarantined (too_large); null = "
                                      "no limit")
    include_pattern: Optional[str] = Field(
        None, description="keep only rows whose text matches this regex (case-insensitive), any source; null = all")
    embedded_topic_pattern: Optional[str] = Field(
        AIRLINE_PATTERN, description="the embedded tweet corpus only (data.path null): keep tweets matching this "
                                     "regex (default: the airline topic); null = every topic")
    batches: list[Annotated[str, StringConstraints(pattern=BATCH_ID)]] = Field(
        [], description="ingested batch ids in the training pool (the retraining flow appends; content-addressed)")


class ValidateConfig(_Strict):
    min_rows: int = Field(20, ge=1, description="fewer accepted rows fails the dataset")
    min_rows_per_class: int = Field(2, ge=1, description="a rarer class fails the dataset")
    labels: Optional[list[str]] = Field(None, description="allowed labels; null = whatever the data has")
    min_chars: int = Field(1, ge=1, description="shorter texts (after stripping) are quarantined")
    drop_duplicates: bool = True
    drop_near_duplicates: bool = Field(True, description="same text after normalizing case, whitespace, URLs, @handles")
    drop_conflicting_labels: bool = Field(True, description="quarantine texts that appear with different labels")
    encoding_action: Literal["report", "quarantine"] = Field(
        "report", description="rows with undecodable bytes or mojibake: count them, or quarantine them")
    max_quarantine_share: float = Field(0.5, ge=0, le=1, description="a larger share of quarantined rows fails")
    min_image_side: int = Field(32, ge=1, description="image-classification: smaller images are quarantined")
    max_image_pixels: int = Field(
        64_000_000, ge=1, description="image-classification: images with more pixels are quarantined before they are "
                                      "decoded (too_many_pixels)")
    image_mode_action: Literal["convert", "quarantine"] = Field(
        "convert", description="image-classification: images not in RGB (alpha, grey, palette, CMYK): convert or quarantine")


class AugmentConfig(_Strict):
    copies: int = Field(0, ge=0, description="augmented copies of each training row; 0 = off")
    methods: list[Literal["random_deletion", "random_swap"]] = ["random_deletion", "random_swap"]
    p: float = Field(0.1, gt=0, lt=1, description="share of words deleted / swapped")


class PreprocessConfig(_Strict):
    seed: int = 42
    val_size: float = Field(0.1, gt=0, lt=1)
    test_size: float = Field(0.2, gt=0, lt=1)
    max_train_samples: Union[Literal["auto"], None, Annotated[int, Field(ge=1)]] = Field(
        None, description="a stratified cap on training rows; auto = 3000 (text-generation: 320); null = all")
    max_val_samples: Optional[int] = Field(None, ge=1)
    max_test_samples: Union[Literal["auto"], None, Annotated[int, Field(ge=1)]] = Field(
        None, description="a stratified cap on test rows; auto = null (text-generation: 150); null = all")
    max_length: Union[Literal["auto"], Annotated[int, Field(ge=8)]] = Field(
        64, description="text, token and generation kinds: tokens (generation: prompt + answer); longer inputs are "
                        "truncated; auto = 64 (text-generation: 256)")
    image_size: Optional[int] = Field(
        None, ge=8, description="image-classification: square side the model sees (pixels); null = the model's own "
                                "image processor's size")
    batch_size: int = Field(1000, ge=1, description="texts per tokenizer call")
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _splits_leave_training_rows(self) -> "PreprocessConfig":
        if self.val_size + self.test_size >= 1:
            raise ValueError("val_size + test_size must be < 1")
        return self


class LoraConfig(_Strict):
    r: int = Field(8, ge=1, description="adapter rank")
    alpha: int = Field(16, ge=1, description="adapter scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: Optional[list[str]] = Field(None, description="module names to adapt; null = PEFT's default")
    save: Literal["merged", "adapter"] = Field("merged", description="merged into plain HF weights, or an adapter dir")


class TrainConfig(_Strict):
    model: str = Field("default", description="'default' = packaged MiniLM-L6; else an HF model id or a local directory")
    strategy: Literal["auto", "full", "head", "gradual", "lora"] = Field(
        "full", description="full fine-tuning | head only (base frozen) | gradual unfreezing top-down | LoRA adapters; "
                            "auto = full (text-generation: lora)")
    lora: LoraConfig = LoraConfig()
    blocks: Optional[str] = Field(
        None, description="dotted path of the model's list of blocks (e.g. transformer.h) where tuneline cannot find "
                          "it; head, gradual and layer_lr_decay group parameters by these blocks")
    optimizer: Literal["adamw", "adam", "sgd", "rmsprop"] = Field(
        "adamw", description="the update rule (fused or foreach implementation where torch has one)")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd and rmsprop: momentum")
    nesterov: bool = Field(False, description="sgd: Nesterov momentum")
    loss: Literal["auto", "cross_entropy", "focal", "mse", "huber"] = Field(
        "auto", description="auto = cross_entropy (classification) / mse (regression); focal: (1-p)^gamma x CE")
    focal_gamma: float = Field(2.0, ge=0, description="loss focal: how much well-classified rows are discounted")
    huber_delta: float = Field(1.0, gt=0, description="loss huber: where the squared error turns linear")
    unfreeze_layers_per_epoch: int = Field(1, ge=1, description="gradual: groups unfrozen per epoch after the first")
    layer_lr_decay: float = Field(1.0, gt=0, le=1, description="each layer's rate = rate of the layer above × decay")
    dropout: Optional[float] = Field(None, ge=0, lt=1, description="override the model's dropout probabilities")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: Literal["none", "balanced"] = Field("none", description="balanced: inverse class frequency")
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    epochs: Union[Literal["auto"], Annotated[int, Field(ge=1)]] = Field(
        "auto", description="epochs to train (early stopping may end sooner); auto = up to max_epochs (default "
                            f"{AUTO_MAX_EPOCHS}), ended by early stopping on validation")
    max_epochs: Union[Literal["auto"], None, Annotated[int, Field(ge=1)]] = Field(
        None, description="an epoch budget that replaces `epochs`: set it generously and early stopping on "
                                f"validation ends the run; null = train.epochs ({AUTO_MAX_EPOCHS} with epochs auto); "
                                "auto = null (text-generation: 2)")
    batch_size: Union[Literal["auto"], Annotated[int, Field(ge=1)]] = Field(
        "auto", description="rows per step; auto = 32 on CPU (text-generation: 8), a token budget on CUDA with the "
                            "learning rate scaled by "
                            "sqrt(batch/32) (tasks/engine/sizing.py)")
    learning_rate: Union[Literal["auto"], Annotated[float, Field(gt=0)]] = Field(
        "auto", description="for a batch of 32 rows (scaled when batch_size auto picks more); auto = measured rates "
                            "per task kind, model family, strategy and optimizer (tasks/engine/rates.py)")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    early_stopping_patience: int = Field(2, ge=1, description="epochs without val macro-F1 gain before stopping")
    seed: int = 42
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 autocast (fp32 weights) where the device runs bf16 natively: a CUDA GPU that "
                            "supports it, a CPU with avx512_bf16 or AMX; else fp32. fp16: CUDA only")
    num_threads: Optional[int] = Field(None, ge=1, description="torch CPU threads; null = all cores")
    checkpoint_every_steps: Optional[int] = Field(
        200, ge=1, description="resumable checkpoint every N steps (and after every epoch); null = epochs only")
    processes: Optional[int] = Field(
        None, ge=1, description="data-parallel processes (torchrun + DDP); null = one per CUDA device, 1 on CPU")
    compile: bool = Field(False, description="torch.compile the model, on fixed batch shapes (see pad_multiple)")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile's mode; reduce-overhead replays CUDA graphs (one per batch width)")
    pad_multiple: Optional[int] = Field(
        None, ge=1, description="pad batch widths up to multiples of this and fill the last batch with ignored rows "
                                "(a few fixed shapes for torch.compile / CUDA graphs); null = 16 with compile, else off")
    image_augment: list[Literal["flip", "crop", "color"]] = Field(
        ["flip", "crop", "color"], description="image-classification: random training-only transforms, per epoch")

    @property
    def epoch_budget(self) -> int:
        if self.max_epochs == "auto":
            raise ValueError("train.max_epochs auto: resolve it with the task kind first (Params resolves it)")
        return self.max_epochs or (AUTO_MAX_EPOCHS if self.epochs == "auto" else self.epochs)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> "TrainConfig":
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer sgd with momentum > 0")
        return self


class GenerateConfig(_Strict):
    """text-generation: how answers are generated (saved with the model as its generation_config, so `tuneline
    predict`, evaluate, the model server and `transformers.pipeline` generate alike)."""
    max_new_tokens: int = Field(64, ge=1, le=4096, description="new tokens per answer at most")
    stop_strings: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        [], description="generation ends after any of these texts (the model's end-of-turn token always ends it)")
    do_sample: bool = Field(False, description="false = greedy (deterministic); true = sample with temperature/top_p")
    temperature: float = Field(1.0, gt=0, le=5, description="do_sample: softmax temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="do_sample: nucleus sampling's probability mass")


class InferenceConfig(_Strict):
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="evaluate, reference, predict, monitoring and the model server: auto = bf16 where the "
                            "device runs it natively (as train.precision), unless the task kind keeps fp32")


class EvaluateConfig(_Strict):
    batch_size: int = Field(128, ge=1)
    baseline_max_features: int = Field(50000, ge=100)
    calibration_bins: int = Field(10, ge=2, description="bins of the reliability curve / expected calibration error")
    slice_column: Optional[str] = Field(None, description="report metrics per value of this data column, if present")
    min_slice_rows: int = Field(20, ge=1, description="smaller slices are left out of the slice report")


class PromoteConfig(_Strict):
    metric: Literal["auto", "macro_f1", "weighted_f1", "accuracy", "rmse", "mae", "r2", "spearman", "answer_f1",
                    "exact_match", "chrf", "rouge_l"] = Field(
        "auto", description="the gate's metric; auto = the kind's headline (macro_f1; rmse for regression, where "
                            "lower is better and the gate compares that way)")
    min_delta: float = Field(0.0, description="the candidate must beat production by at least this much")
    max_class_drop: float = Field(0.05, ge=0, description="no class's F1 may drop by more than this")
    max_set_drop: float = Field(
        0.02, ge=0, description="on each test set (old data; the newest batch's holdout) the metric may not drop more")
    min_over_baseline: Optional[float] = Field(
        0.0, description="the candidate must beat evaluate's simple baseline on the same test rows by at least this "
                         "much, the first candidate too; null = no baseline check")


class MonitorConfig(_Strict):
    reference_rows: Union[Literal["auto"], Annotated[int, Field(ge=50)]] = Field(
        1000, description="training rows profiled for drift (reference stage); auto = 1000 (text-generation: 100)")
    max_rows: int = Field(2000, ge=50, description="batch rows sampled for the drift check (text classifier, model)")
    text_drift_auc: float = Field(0.55, gt=0.5, lt=1, description="text drift when the domain classifier's AUC exceeds")
    drift_share: float = Field(0.5, gt=0, le=1, description="retrain when this share of checked columns drifted")
    max_f1_drop: float = Field(0.05, ge=0, description="retrain when live macro-F1 is this far below production's test")
    max_error_rise: float = Field(
        0.05, ge=0, description="regression: retrain when the live RMSE is this far above production's test")
    min_new_labelled_rows: int = Field(5000, ge=1, description="retrain when this many labelled rows wait outside the pool")
    lock_timeout_s: float = Field(0, ge=0, description="how long a second monitoring/retraining run waits for the lock")


class RetrainConfig(_Strict):
    init: Literal["base", "production"] = Field(
        "base", description="retrain from the pre-trained base model, or warm-start from the production model")
    replay_share: float = Field(
        1.0, gt=0, le=1, description="warm start: share of the old training rows replayed beside the new ones")


class SweepConfig(_Strict):
    grid: dict[str, list[Any]] = Field(
        {"train.learning_rate": [5e-5, 1e-4, 2e-4], "train.max_epochs": [3, 6]},
        description="params key -> values to try (train.*, preprocess.max_train_samples, preprocess.augment.*)")
    max_trials: int = Field(8, ge=1, description="a seeded sample of this many combinations when the grid has more")
    jobs: int = Field(1, ge=1, description="trials run at once (DVC queue workers); each uses train.num_threads")
    time_budget_s: Optional[float] = Field(None, gt=0, description="no new wave of trials starts after this; null = none")
    seed: int = 0

    @model_validator(mode="after")
    def _grid_has_values(self) -> "SweepConfig":
        empty = [key for key, values in self.grid.items() if not values]
        if empty or not self.grid:
            raise ValueError(f"every grid key needs at least one value: {empty or 'the grid is empty'}")
        return self


class ServeConfig(_Strict):
    """The model server (`tuneline serve-model`): LitServe with dynamic batching in front of the production model."""
    host: Literal["127.0.0.1", "0.0.0.0", "::"] = Field(
        "127.0.0.1", description="127.0.0.1 = this machine only; another address needs TUNELINE_SERVE_TOKEN")
    port: int = Field(8000, ge=1024, le=65535)
    workers: Union[Literal["auto"], Annotated[int, Field(ge=1)]] = Field(
        "auto", description="inference worker processes (each loads the model, each hot-swaps); auto = one per "
                            "physical core on a CPU (at most 4), one per GPU")
    api_servers: Optional[int] = Field(None, ge=1, description="HTTP server processes; null = one per worker")
    max_batch_size: int = Field(16, ge=1, description="requests a worker groups into one model call")
    batch_timeout_ms: float = Field(10.0, ge=0, description="how long a worker waits to fill a batch")
    max_body_bytes: int = Field(10_000_000, ge=1, description="larger request bodies get 413")
    max_rows_per_request: int = Field(64, ge=1, description="more inputs in one request get 413")
    max_text_chars: int = Field(10_000, ge=1, description="a longer text gets 413")
    max_image_pixels: int = Field(25_000_000, ge=1, description="an image with more pixels gets 413 (header only)")
    log_share: float = Field(1.0, ge=0, le=1, description="share of requests logged as traffic; 0 = off")
    rotate_rows: int = Field(1000, ge=1, description="a traffic file goes to the drop folder at this many rows ...")
    rotate_minutes: float = Field(60.0, gt=0, description="... or this old, as a batch monitoring checks")
    reload_check_s: float = Field(1.0, gt=0, description="how often each worker looks for a new production model")


# A run started through the Prefect API may change only these params (control.override_keys); never these groups.
NEVER_OVERRIDDEN = ("promote.", "validate.", "control.")
BUDGET_KEYS = ["train.epochs", "train.max_epochs", "train.learning_rate", "train.batch_size",
               "train.early_stopping_patience", "preprocess.max_train_samples", "preprocess.max_val_samples"]


class ControlConfig(_Strict):
    override_keys: list[str] = Field(
        BUDGET_KEYS, description="params keys that a run started through the Prefect API (a deployment's `overrides`, "
                                 "a sweep's `grid`) may set; never promote.*, validate.* or control.*. The command "
                                 "line (-S) is the project owner's and may set any key")

    @model_validator(mode="after")
    def _never_the_gate(self) -> "ControlConfig":
        bad = [key for key in self.override_keys if key.startswith(NEVER_OVERRIDDEN)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: the gate's, validation's and these keys cannot be set from the "
                             "Prefect API")
        return self


class Params(_Strict):
    task: TaskConfig = TaskConfig()
    data: DataConfig = DataConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    preprocess: PreprocessConfig = PreprocessConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    generate: GenerateConfig = GenerateConfig()
    inference: InferenceConfig = InferenceConfig()
    promote: PromoteConfig = PromoteConfig()
    monitor: MonitorConfig = MonitorConfig()
    retrain: RetrainConfig = RetrainConfig()
    sweep: SweepConfig = SweepConfig()
    control: ControlConfig = ControlConfig()
    serve: ServeConfig = ServeConfig()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _resolve_kind_settings(self) -> "Params":
        """`auto` settings take the task kind's value (KIND_AUTO); settings the kind cannot use are refused."""
        kind = self.task.kind
        for key in KIND_AUTO:
            section, field = key.split(".")
            if getattr(getattr(self, section), field) == "auto":
                setattr(getattr(self, section), field, kind_auto(kind, key))
        for (key, value), why in KIND_REFUSES.get(kind, {}).items():
            section, field = key.split(".")
            if getattr(getattr(self, section), field) == value:
                raise ValueError(f"{key} {value}: {kind}: {why}")
        return self

    @model_validator(mode="after")
    def _override_keys_exist(self) -> "Params":
        unknown = [key for key in self.control.override_keys if not has_key(Params, key)]
        if unknown:
            raise ValueError(f"control.override_keys: {', '.join(unknown)}: no such params key")
        return self


def has_key(model: type[BaseModel], dotted: str) -> bool:
    """Whether `section.key` (any depth) names a field of the typed params."""
    head, _, rest = dotted.partition(".")
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    if head not in fields:
        return False
    if not rest:
        return True
    annotation = fields[head].annotation
    return isinstance(annotation, type) and issubclass(annotation, BaseModel) and has_key(annotation, rest)


def _key_of(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if part != "validate_") or "<root>"


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate a params mapping; every problem is reported as `file: key: reason`."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = _key_of(err["loc"])
            reason = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            if key == "<root>" and err["type"] == "value_error":  # a rule across sections: its message names the key
                lines.append(f"{source}: {reason.removeprefix('Value error, ')}")
                continue
            lines.append(f"{source}: {key}: {reason}")
        raise ConfigError("invalid params:\n  " + "\n  ".join(lines)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return parse_params(raw, source=str(path))
