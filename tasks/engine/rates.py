"""`train.learning_rate: auto`: a rate for the task kind, the model family, the strategy and the optimizer, for a
batch of 32 rows (sizing.py scales it when `batch_size: auto` picks more), printed and recorded with its reason.

Where the figures come from (each row of TABLE says which):
- text, full fine-tuning: 5e-5, measured on the tweets (test macro-F1 0.7962 against the TF-IDF baseline's 0.6539).
  Head-only 1e-3 and LoRA 5e-4, measured likewise (at 5e-5 both stayed at the majority class in 3 epochs).
- tokens, full fine-tuning: 5e-4, measured on WNUT-16 (at 5e-5 and 3 epochs, macro-F1 0.087 against the
  baseline's 0.303). Head-only and LoRA at the ratios measured for text.
- images, full fine-tuning of an ImageNet CNN: 1e-3, measured on EfficientNet-Lite0 and the digits.
- vision transformers (ViT, DeiT, Swin, BEiT, DINOv2) at a tenth of that, as their papers fine-tune them: not
  measured here (no pre-trained ViT is installed).
- optimizers, measured on the text default (benchmarks/optimizer_quality.py, 3 epochs): SGD with momentum 0.9 at
  200x AdamW's rate (1e-2: macro-F1 0.7595; 3e-3: 0.3290; 3e-2: 0.7330); RMSprop with momentum 0.9 at 0.2x
  (1e-5: 0.7793; 5e-5: 0.6556). Adam at AdamW's rate (0.6601; only that rate measured).
- text generation (causal LMs, SFT), for its CPU batch of 8 rows: LoRA 1e-3, measured on SmolLM2-135M-Instruct and
  the WNUT-16 JSON task (README, "Text generation"); full fine-tuning and gradual unfreezing 2e-5, the rate SFT
  recipes for small instruct models use (not measured here: a full step costs minutes on this CPU).
Needs only the standard library, so the trainer runs on a bare GPU box.
"""
from __future__ import annotations

from typing import NamedTuple

# kind -> strategy -> (rate for AdamW at batch 32, where it comes from)
TABLE = {
    "text-classification": {"full": (5e-5, "measured"), "gradual": (5e-5, "measured"), "head": (1e-3, "measured"),
                            "lora": (5e-4, "measured")},
    "text-regression": {"full": (5e-5, "as text"), "gradual": (5e-5, "as text"), "head": (1e-3, "as text"),
                        "lora": (5e-4, "as text")},
    "token-classification": {"full": (5e-4, "measured"), "gradual": (5e-4, "as full"),
                             "head": (1e-2, "20x full, as measured for text"),
                             "lora": (5e-3, "10x full, as measured for text")},
    "text-generation": {"lora": (1e-3, "measured"), "full": (2e-5, "SFT recipes' rate, not measured here"),
                        "gradual": (2e-5, "as full")},
    "image-classification": {"full": (1e-3, "measured"), "gradual": (1e-3, "as full"),
                             "head": (1e-2, "10x full"), "lora": (1e-2, "10x full")},
}
VISION_TRANSFORMERS = {"vit", "deit", "swin", "swinv2", "beit", "dinov2"}
OPTIMIZER_FACTOR = {"adamw": 1.0, "adam": 1.0, "rmsprop": 0.2, "sgd": 200.0}


class Rate(NamedTuple):
    learning_rate: float
    reason: str


def choose_rate(setting: float | str, kind: str, model_type: str | None, strategy: str, optimizer: str) -> Rate:
    """The rate a run starts from (for 32 rows): `setting` when it is a number, else the table's."""
    if setting != "auto":
        return Rate(float(setting), "train.learning_rate")
    base, source = TABLE.get(kind, TABLE["text-classification"])[strategy]
    rate, parts = base, [f"{kind} {strategy}: {base:g} ({source})"]
    if kind == "image-classification" and model_type in VISION_TRANSFORMERS and strategy in ("full", "gradual"):
        rate, parts = rate * 0.1, parts + [f"x 0.1 for a vision transformer ({model_type})"]
    factor = OPTIMIZER_FACTOR[optimizer]
    if factor != 1.0:
        rate, parts = rate * factor, parts + [f"x {factor:g} for {optimizer}"]
    return Rate(rate, f"learning rate auto: {rate:.3g} = " + " ".join(parts))
