"""A model directory's weight files: their sha256 (what a registry version records when it is promoted), and the
check of a registered version against that record before anything loads it (predict, the model server, rollback,
pull)."""
from __future__ import annotations

import json
from pathlib import Path

from tasks.files.digest import file_sha256, files_sha256

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
RECORD_FILE = "record.json"  # a registered version's record: its lineage and its weights' sha256


class WeightsMismatch(ValueError):
    """A registered version's weights differ from its record; the message names the version and the file."""


def weight_files(model_dir: Path) -> list[Path]:
    return [p for pattern in WEIGHT_PATTERNS for p in sorted(Path(model_dir).glob(pattern))]


def weights_sha256(model_dir: Path) -> str:
    """sha256 over the weight files (names and bytes, in name order): the same model retrained bit-for-bit (or not
    retrained) has the same print, and a changed byte changes it."""
    return files_sha256(weight_files(model_dir), with_names=True)


def weight_file_hashes(model_dir: Path) -> dict[str, str]:
    """Each weight file's sha256, recorded with a version so a mismatch can name the file."""
    return {p.name: file_sha256(p) for p in weight_files(model_dir)}


def verify_weights(model_dir: Path) -> None:
    """A registered version's weights against the sha256 recorded when it was promoted (record.json); a model
    directory without a record (a candidate) has nothing to check. Raises RegistryError naming version and file."""
    record_file = Path(model_dir) / RECORD_FILE
    if not record_file.exists():
        return
    record = json.loads(record_file.read_text(encoding="utf-8"))
    version = f"v{record.get('version', '?')}"
    for name, expected in (record.get("weights_files") or {}).items():
        path = Path(model_dir) / name
        if not path.exists():
            raise WeightsMismatch(f"{version}: weight file {path} is missing; refusing to use this version")
        if file_sha256(path) != expected:
            raise WeightsMismatch(f"{version}: {path} does not match the sha256 recorded when it was promoted; "
                                "refusing to use this version (restore it with `tuneline pull`, or roll back)")
    if "weights_sha256" in record and weights_sha256(Path(model_dir)) != record["weights_sha256"]:
        raise WeightsMismatch(f"{version}: the weight files in {model_dir} do not match the sha256 recorded when it was "
                            "promoted; refusing to use this version")
