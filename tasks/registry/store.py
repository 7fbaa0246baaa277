"""Model registry: immutable version directories, an append-only event log, and `production` as a symlink.

Layout (registry root, default models/registry, DVC-tracked):
    versions/v0003/      HF model files + README.md (model card) + record.json, never changed once written
    events.jsonl         one JSON object per event: promoted, rejected, rolled_back
and `models/production` -> `registry/versions/v0003`.

Promotion writes the version directory aside and renames it into place, swaps the production symlink with
os.replace (atomic on POSIX), then appends the event: production is always on the old or the new version, complete.
A promotion killed between those steps (kill -9, power loss) leaves a version directory or a production link the
event log does not know yet; `repair`, which every state-changing registry operation runs first under the project
lock, finishes it (production already switched: the event is written from the version's record.json) or undoes it
(production not switched: the unannounced version directory goes), and drops temp leftovers and a half-written
last event line.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from tasks.files.failpoints import failpoint
from tasks.files.tables import fsync_file, write_text
from tasks.files.weights import verify_weights

VERSION_PREFIX = "v"
REFERENCE_FILE = "reference_profile.parquet"  # in each version: what monitoring compares new batches with


class RegistryError(ValueError):
    pass


def fsync_tree(folder: Path) -> None:
    """Every file below `folder`, then the folder itself, flushed to disk (before a rename publishes it)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            fsync_file(path)
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def version_name(version: int) -> str:
    return f"{VERSION_PREFIX}{version:04d}"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")




@dataclass(frozen=True)
class Registry:
    root: Path
    production: Path

    @classmethod
    def of_project(cls, project_dir: str | Path) -> "Registry":
        from tasks.paths import ProjectPaths

        paths = ProjectPaths(Path(project_dir).resolve())
        return cls(paths.registry, paths.production)

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def events_file(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def orphans_dir(self) -> Path:
        return self.root / "orphans"

    def events(self) -> list[dict]:
        if not self.events_file.exists():
            return []
        lines = self.events_file.read_text(encoding="utf-8").split("\n")
        return [json.loads(line) for line in lines[:-1] if line]  # a last line without "\n" was never finished

    def records(self) -> list[dict]:
        """One record per version number (promoted or rejected), oldest first."""
        return [e["record"] for e in self.events() if e["event"] in ("promoted", "rejected")]

    def production_version(self) -> Optional[int]:
        if not self.production.is_symlink():
            if self.production.exists():
                raise RegistryError(f"{self.production} is not a registry link; move it away to use the registry")
            return None
        return int(Path(os.readlink(self.production)).name.removeprefix(VERSION_PREFIX))

    def production_labels(self) -> list[str]:
        """The production model's label set, in its output order (config.json's id2label)."""
        config = json.loads((self.production / "config.json").read_text(encoding="utf-8"))
        return [config["id2label"][str(i)] for i in range(len(config["id2label"]))]

    def next_version(self) -> int:
        return max((r["version"] for r in self.records()), default=0) + 1

    def version_dir(self, version: int) -> Path:
        return self.versions_dir / version_name(version)

    def append_event(self, event: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps(event, sort_keys=True) + "\n"
        with self.events_file.open("a", encoding="utf-8") as fh:
            fh.write(line[: len(line) // 2])
            fh.flush()
            failpoint("event-half-written")
            fh.write(line[len(line) // 2:])
            fh.flush()
            os.fsync(fh.fileno())

    def repair(self) -> list[str]:
        """Finish or undo a promotion that was killed part way; returns what was done (nothing, normally)."""
        done = []
        if self.events_file.exists():
            text = self.events_file.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):  # rewritten aside, then renamed: a crash here loses nothing
                write_text(text[: text.rfind("\n") + 1], self.events_file)
                done.append("dropped a half-written last event")
        for tmp in [*self.versions_dir.glob(".v*.tmp-*"), *self.production.parent.glob(f".{self.production.name}.tmp-*")]:
            shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink()
            done.append(f"removed the leftover {tmp.name}")
        known = {r["version"] for r in self.records()}
        current = self.production_version()
        for directory in sorted(self.versions_dir.glob(f"{VERSION_PREFIX}[0-9]*")):
            version = int(directory.name.removeprefix(VERSION_PREFIX))
            if version in known:
                continue
            if version == current:  # production switched, the event was not written: finish the promotion
                record = json.loads((directory / "record.json").read_text(encoding="utf-8"))
                self.append_event({"event": "promoted", "time": now(), "version": version, "record": record,
                                   "repaired": True})
                done.append(f"completed the interrupted promotion of v{version} (production was already on it)")
            else:  # not in the log and not production: set aside, never deleted (the log may be what was lost)
                self.orphans_dir.mkdir(parents=True, exist_ok=True)
                target = self.orphans_dir / f"{directory.name}-{now().replace(':', '')}"
                os.replace(directory, target)
                done.append(f"moved v{version}, which events.jsonl does not list, to {target} (production stayed on "
                            f"v{current}; an interrupted promotion, or a lost log: nothing was deleted)")
        wanted = self.production_from_events()
        if current is None and wanted is not None and not self.production.exists():
            # A fresh clone after `dvc pull`: the link is machine-local (not versioned); the event log says where.
            self.switch_production(wanted)
            done.append(f"restored the production link to v{wanted} from the event log")
        return done

    def production_from_events(self) -> Optional[int]:
        """The version the last promotion or rollback put in production."""
        version = None
        for event in self.events():
            if event["event"] in ("promoted", "rolled_back"):
                version = event["version"]
        return version

    def stage_version(self, candidate_dir: Path, record: dict, card: str, extra: Optional[dict[str, Path]] = None) -> Path:
        """Copy the candidate into an immutable version directory (written aside, then renamed into place)."""
        final = self.version_dir(record["version"])
        if final.exists():
            raise RegistryError(f"{final} already exists")
        tmp = self.versions_dir / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(candidate_dir, tmp)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        for name, source in (extra or {}).items():  # e.g. the reference profile that monitoring compares against
            shutil.copy2(source, tmp / name)
        (tmp / "record.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        fsync_tree(tmp)
        failpoint("version-copied")
        os.replace(tmp, final)
        fsync_dir(self.versions_dir)
        return final

    def switch_production(self, version: int) -> None:
        target = self.version_dir(version)
        if not (target / "config.json").exists():
            raise RegistryError(f"version {version} has no model files at {target}")
        self.production_version()  # refuses to replace a real directory
        self.production.parent.mkdir(parents=True, exist_ok=True)
        link = self.production.with_name(f".{self.production.name}.tmp-{os.getpid()}")
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(target, self.production.parent))
        os.replace(link, self.production)
        fsync_dir(self.production.parent)

    def promote(self, candidate_dir: Path, record: dict, card: str, extra: Optional[dict[str, Path]] = None) -> None:
        self.stage_version(candidate_dir, record, card, extra)
        failpoint("version-staged")
        self.switch_production(record["version"])
        failpoint("production-switched")
        self.append_event({"event": "promoted", "time": now(), "version": record["version"], "record": record})

    def reject(self, record: dict) -> None:
        self.append_event({"event": "rejected", "time": now(), "version": record["version"], "record": record})

    def rollback(self, version: int) -> int:
        self.repair()
        known = {r["version"]: r for r in self.records()}
        if version not in known or not self.version_dir(version).exists():
            promoted = sorted(v for v, r in known.items() if r["decision"]["promoted"])
            raise RegistryError(f"version {version} cannot be restored; promoted versions: {promoted or 'none'}")
        previous = self.production_version()
        verify_weights(self.version_dir(version))
        self.switch_production(version)
        self.append_event({"event": "rolled_back", "time": now(), "version": version, "from_version": previous})
        return version
