"""Task kinds: one object per kind owns everything kind-specific (see base.py); `get_kind` picks it by name."""
from __future__ import annotations

import json
from pathlib import Path

from tasks.kinds.base import Kind

DEFAULT_KIND = "text-classification"


def get_kind(kind: "Kind | str") -> Kind:
    """The kind object for a `task.kind` value (kinds are imported on first use: each pulls its own libraries)."""
    if isinstance(kind, Kind):
        return kind
    if kind == "text-classification":
        from tasks.kinds.text import TextKind

        return TextKind()
    if kind == "token-classification":
        from tasks.kinds.token import TokenKind

        return TokenKind()
    if kind == "image-classification":
        from tasks.kinds.image import ImageKind

        return ImageKind()
    raise ValueError(f"unknown task kind {kind!r}")


def kind_of_model(model_dir: str | Path) -> Kind:
    """The kind a saved model directory was trained for (models saved before kinds existed are text classifiers)."""
    from tasks.engine.modeling import KIND_FILE

    marker = Path(model_dir) / KIND_FILE
    name = json.loads(marker.read_text(encoding="utf-8"))["kind"] if marker.exists() else DEFAULT_KIND
    return get_kind(name)
