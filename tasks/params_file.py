"""Writing params.yaml: `section.key: value` overrides (`tuneline run -S`, a retraining plan, a sweep's winner),
checked before anything is written and written atomically, comments kept.

DVC then sees the changed params like any hand edit, so `dvc repro` and the flows stay in agreement. A kill or a
full disk during the write leaves the previous file whole: the new text goes to a temp file beside it, is flushed to
disk, and replaces params.yaml in one rename.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Mapping

from tasks.config import parse_params
from tasks.files.tables import write_text


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise KeyError(dotted)
    node[leaf] = value


def apply_overrides(params_file: str | Path, overrides: Mapping[str, Any]) -> None:
    """Write the overrides into params.yaml after checking the result as a whole (a bad key or value raises
    ConfigError naming it, and the file is left as it was)."""
    if not overrides:
        return
    from ruamel.yaml import YAML

    yaml = YAML()
    path = Path(params_file)
    doc = yaml.load(path.read_text(encoding="utf-8")) or {}
    for key, value in overrides.items():
        set_dotted(doc, key, value)
    parse_params(json.loads(json.dumps(doc)), source=f"{path} (with overrides)")  # raises naming the bad key
    text = io.StringIO()
    yaml.dump(doc, text)
    write_text(text.getvalue(), path)
