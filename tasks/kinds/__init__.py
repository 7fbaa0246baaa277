"""Task kinds: one object per kind owns everything kind-specific (see base.py); `get_kind` picks it by name.

A new kind is a module in this folder and one line in config.py's KINDS (the registry params are checked against).
Kinds are imported on first use: each pulls its own libraries.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.kinds.base import Kind

from tasks.config import KIND_NAMES, KINDS

DEFAULT_KIND = "text-classification"
DEFAULT_MODEL = "default"  # train.model's value for the kind's packaged pre-trained model
KIND_FILE = "tuneline.json"  # written beside a saved model: which task kind it was trained for


def get_kind(kind: "Kind | str") -> "Kind":
    """The kind object for a `task.kind` value."""
    if not isinstance(kind, str):
        return kind
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; known: {', '.join(KIND_NAMES)}")
    module, cls = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), cls)()


def kind_of_model(model_dir: str | Path) -> "Kind":
    """The kind a saved model directory was trained for (models saved before kinds existed are text classifiers)."""
    marker = Path(model_dir) / KIND_FILE
    name = json.loads(marker.read_text(encoding="utf-8"))["kind"] if marker.exists() else DEFAULT_KIND
    return get_kind(name)


def mark_model_kind(model_dir: str | Path, kind: "Kind | str") -> None:
    """Record beside a saved model which kind it was trained for (what `kind_of_model` reads)."""
    name = kind if isinstance(kind, str) else kind.name
    (Path(model_dir) / KIND_FILE).write_text(json.dumps({"kind": name}) + "\n", encoding="utf-8")


def resolve_model(name: str, kind: "Kind | str") -> str:
    """`train.model` as a path or hub id: 'default' is the kind's packaged pre-trained model."""
    return get_kind(kind).default_model() if name == DEFAULT_MODEL else name
