"""Hostile inputs: files that point outside their folder, decompression bombs, deep JSON, oversized Parquet, links
in the drop folder, forged batch ids, formulas in CSV cells, a quadratic sniffer sample. Each test attacks and then
checks that nothing outside was read or written and that production and the accepted data are unchanged."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd
import pytest

from tasks import checks, intake
from tasks.config import DataConfig, Params, PreprocessConfig, TrainConfig, ValidateConfig
from tasks.files import tables
from tasks.files.tables import DataFileError
from tasks.monitoring.batches import BatchRejected, BatchStore
from tasks.paths import ProjectPaths
from tasks.registry.store import Registry
from tests.conftest import IMAGE, LENIENT, make_images, tree_digest, user_cfg, user_frame


def png(side_w: int, side_h: int, mode: str = "RGB") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (side_w, side_h)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


# --- image paths in a batch table ----------------------------------------------------------------------------------

def test_image_paths_outside_the_tables_folder_or_not_files_are_quarantined_unread(tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "private.png").write_bytes(png(40, 40))  # a real image outside the batch's folder
    folder = make_images(tmp_path / "batch", per_class=3)
    os.mkfifo(folder / "red" / "fifo.png")  # read whole, this would block forever
    (folder / "red" / "escape.png").symlink_to(secret / "private.png")  # a link out of the folder
    (folder / "red" / "big.png").write_bytes(png(40, 40) + b"\0" * 30_000)
    rows = {"red/0.png": "fine", str(secret / "private.png"): "unsafe_path", "../secret/private.png": "unsafe_path",
            "red/escape.png": "unsafe_path", "/dev/zero": "unsafe_path", "red/fifo.png": "not_a_file",
            "red": "not_a_file", "red/big.png": "too_large", "red/none.png": "missing_file"}
    pd.DataFrame({"image": list(rows), "sentiment": "red"}).to_csv(folder / "batch.csv", index=False)
    cfg = DataConfig(max_image_bytes=20_000)
    frame = IMAGE.read_file(folder / "batch.csv", cfg)  # returns: nothing blocked, nothing was read whole
    out = checks.check(frame, cfg, LENIENT, "batch.csv", labelled=True, require_classes=False, kind=IMAGE)

    def as_given(path: str) -> str:
        return path[len(str(folder)) + 1:] if path.startswith(str(folder) + "/") else path

    found = {as_given(p): rule for p, rule in zip(out.quarantine["path"], out.quarantine["rule"])}
    assert found == {p: rule for p, rule in rows.items() if rule != "fine"}
    assert list(out.accepted["path"]) == [str(folder / "red/0.png")]
    details = " ".join(out.quarantine["detail"])
    assert "data.max_image_bytes=20,000" in details and "resolves outside" in details
    assert all(b is None for b in frame.loc[frame["read_rule"] != "", "image"])  # refused files were never read


def test_a_decompression_bomb_is_quarantined_from_its_header_and_never_decoded(tmp_path):
    folder = make_images(tmp_path / "imgs", per_class=3)
    (folder / "red" / "bomb.png").write_bytes(png(30000, 30000, "1"))  # 100 KB of PNG, 900 megapixels
    (folder / "red" / "wide.png").write_bytes(png(5000, 5000, "1"))  # under Pillow's own limit, over ours
    cfg = DataConfig(path=str(folder))
    out = checks.check(IMAGE.read_source(cfg), cfg, LENIENT.model_copy(update={"max_image_pixels": 10_000_000}),
                       str(folder), kind=IMAGE)
    rules = dict(zip(out.quarantine["path"].map(lambda p: Path(p).name), out.quarantine["rule"]))
    assert rules == {"bomb.png": "too_many_pixels", "wide.png": "too_many_pixels"}
    assert len(out.accepted) == 9


# --- file formats ----------------------------------------------------------------------------------------------------

def test_a_jsonl_line_nested_100k_deep_is_refused_naming_the_line(tmp_path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"text": "fine", "sentiment": "negative"}\n' + '{"text": ' + "[" * 100_000 + "]" * 100_000 +
                    ', "sentiment": "neutral"}\n', encoding="utf-8")
    with pytest.raises(DataFileError, match=r"deep\.jsonl: line 2 is nested too deeply"):
        tables.read_table(deep)
    store = BatchStore(tmp_path / "batches")
    with pytest.raises(BatchRejected, match="nested too deeply"):  # ingest refuses the file, nothing is stored
        store.ingest(deep, DataConfig(), ValidateConfig(), None)
    assert store.batches() == []


def test_parquet_rows_and_size_are_checked_from_its_metadata_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "many.parquet"
    pd.DataFrame({"text": ["same text"] * 200_000, "sentiment": "a"}).to_parquet(path)  # compresses to a few KB
    read = []
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: read.append(a) or pd.DataFrame())
    with pytest.raises(DataFileError, match=r"200,000 rows \(Parquet metadata\) exceeds data.max_rows=1,000"):
        tables.read_table(path, max_rows=1000)
    wide = tmp_path / "wide.parquet"  # 20,000 long texts that snappy packs 17 to 1
    pd.DataFrame({"text": ["a" * 300 + str(i) for i in range(20_000)], "sentiment": "a"}).to_parquet(wide)
    with pytest.raises(DataFileError, match=r"bytes uncompressed \(Parquet metadata\) exceeds data.max_bytes="):
        tables.read_table(wide, max_bytes=wide.stat().st_size * 2)
    assert read == []  # refused before a row was read


def test_the_csv_sniffer_sees_at_most_8_kib(tmp_path, monkeypatch):
    import csv

    path = tmp_path / "wide.csv"
    path.write_text("text;label\n" + "".join(f'"{"a" * 500}";x\n' for _ in range(300)), encoding="utf-8")
    seen = []
    real = csv.Sniffer.sniff
    monkeypatch.setattr(csv.Sniffer, "sniff", lambda self, sample, delimiters=None: seen.append(len(sample)) or
                        real(self, sample, delimiters))
    assert tables.detect_delimiter(path, "utf-8") == ";"
    assert seen and max(seen) <= 8 * 1024 < path.stat().st_size


def test_cells_that_a_spreadsheet_would_run_are_defused_in_csv_reports(tmp_path):
    from tasks.stages import validate

    formulas = ['=HYPERLINK("http://evil","x")', "+1+1", "-2 stars", "@SUM(A1)", "\tTAB"]
    texts = formulas + [f"plain row {i}" for i in range(30)]
    labels = ["unknown"] * len(formulas) + ["a", "b"] * 15  # the formula rows are quarantined: unknown_label
    pd.DataFrame({"row": range(1, len(texts) + 1), "text": texts, "label": labels}).to_parquet(tmp_path / "raw.parquet")
    validate.run(DataConfig(), ValidateConfig(min_rows=5, max_quarantine_share=1.0, min_rows_per_class=1,
                                              labels=["a", "b"]),
                 tmp_path / "raw.parquet", tmp_path / "ok.parquet", tmp_path / "q.csv", tmp_path / "v.json", "raw")
    cells = pd.read_csv(tmp_path / "q.csv", dtype=str, keep_default_na=False)["text"].tolist()
    assert cells == ["'" + f for f in formulas]  # shown as text, never evaluated
    assert pd.read_parquet(tmp_path / "ok.parquet")["text"].tolist() == texts[len(formulas):]  # data unaltered


def test_batch_ids_are_checked_before_they_are_joined_into_a_path(tmp_path):
    from tasks.config import ConfigError, parse_params

    with pytest.raises(ConfigError, match=r"data\.batches\.0: String should match pattern"):
        parse_params({"data": {"batches": ["../../../etc"]}})
    with pytest.raises(BatchRejected, match="is not a batch id"):
        BatchStore(tmp_path).get("../outside")


# --- the drop folder -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def watched(tmp_path_factory, tiny_model_dir):
    """A project with a promoted text model and its reference profile: what the monitoring flow watches."""
    from tasks.registry import promotion
    from tasks.stages import evaluate, prepare, preprocess, reference, train, validate

    root = tmp_path_factory.mktemp("watched")
    paths = ProjectPaths(root)
    user_frame(20).to_csv(root / "reviews.csv", index=False)
    data = user_cfg(root / "reviews.csv")
    params = Params(data=data, preprocess=PreprocessConfig(max_length=16),
                    train=TrainConfig(model=str(tiny_model_dir), num_threads=1, batch_size=8, epochs=1),
                    promote={"min_over_baseline": None})
    prepare.run(data, root / "raw.parquet")
    validate.run(data, ValidateConfig(), root / "raw.parquet", root / "ok.parquet", root / "q.csv", root / "v.json",
                 "reviews.csv")
    preprocess.run(params.preprocess, str(tiny_model_dir), root / "ok.parquet", paths.processed)
    train.run(params.train, paths.processed, paths.candidate, root / "train")
    evaluate.run(params.evaluate, paths.processed, paths.candidate, paths.metrics)
    reference.run(paths.processed, paths.candidate, paths.reference, 50, 0)
    promotion.run(params, paths.processed, paths.candidate, paths.metrics, Registry.of_project(root), root,
                  paths.reference)
    return params, paths


def test_links_in_the_drop_folder_are_refused_never_read_and_moved_as_links(watched, tmp_path):
    params, paths = watched
    outside = tmp_path / "outside.csv"
    user_frame(10).to_csv(outside, index=False)
    secret = tmp_path / "pgpass"
    secret.write_text("db.example:5432:*:admin:hunter2\n", encoding="utf-8")
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "outside.csv").symlink_to(outside)
    (drop / "pgpass.csv").symlink_to(secret)
    before = (outside.read_bytes(), secret.read_bytes(), tree_digest(paths.batches), tree_digest(paths.registry))
    files, from_drop = intake.files_to_process(paths, drop, None)
    outcomes = [intake.process_file(params, paths, f, from_drop) for f in files]
    assert [o.rejected is not None and "(rule: symlink)" in o.rejected for o in outcomes] == [True, True]
    assert not any("hunter2" in (o.rejected or "") for o in outcomes)
    moved = sorted((drop / "rejected").iterdir())
    assert [p.name for p in moved] == ["outside.csv", "outside.csv.reason.txt", "pgpass.csv", "pgpass.csv.reason.txt"]
    assert moved[0].is_symlink() and moved[2].is_symlink()  # the links moved, not what they name
    assert "hunter2" not in "".join(p.read_text() for p in moved if p.name.endswith(".txt"))
    assert (outside.read_bytes(), secret.read_bytes(), tree_digest(paths.batches), tree_digest(paths.registry)) == before


def test_a_planted_rejected_link_stops_the_move_and_nothing_is_written_through_it(watched, tmp_path):
    params, paths = watched
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "rejected").symlink_to(elsewhere)
    (drop / "junk.csv").write_text("no,useful,columns\n1,2,3\n", encoding="utf-8")
    with pytest.raises(intake.UnsafeDropFolder, match=r"rejected: is a link or not a folder"):
        intake.process_file(params, paths, drop / "junk.csv", from_drop=True)
    assert list(elsewhere.iterdir()) == [] and (drop / "junk.csv").exists()


def test_a_file_that_crashes_is_moved_out_and_later_files_still_run(watched, tmp_path):
    params, paths = watched
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a-deep.jsonl").write_text('{"review": ' + "[" * 100_000 + "]" * 100_000 + "}\n", encoding="utf-8")
    user_frame(5).to_csv(drop / "b-good.csv", index=False)
    before = tree_digest(paths.registry)
    files, from_drop = intake.files_to_process(paths, drop, None)
    outcomes = [intake.process_file(params, paths, f, from_drop) for f in files]
    assert "nested too deeply" in outcomes[0].rejected and (drop / "rejected" / "a-deep.jsonl").exists()
    assert outcomes[1].batch is not None and (drop / "done" / "b-good.csv").exists()
    assert not any(p.is_file() for p in drop.iterdir())  # nothing is left for the next scheduled run to trip over
    assert tree_digest(paths.registry) == before
    # The same name dropped again lands beside the first, never over it.
    user_frame(5).to_csv(drop / "b-good.csv", index=False)
    intake.file_away(drop / "b-good.csv", outcomes[1])
    assert len(list((drop / "done").glob("b-good*.csv"))) == 2


def test_drop_files_are_the_folders_entries_with_a_batch_suffix_links_and_fifos_included(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a.csv").write_text("x\n1\n")
    (drop / "b.csv").symlink_to(drop / "a.csv")
    os.mkfifo(drop / "c.jsonl")
    (drop / "notes.md").write_text("ignored")
    (drop / "done").mkdir()
    assert [p.name for p in intake.drop_files(drop)] == ["a.csv", "b.csv", "c.jsonl"]
    assert intake.not_a_regular_file(drop / "a.csv") is None
    assert "rule: symlink" in intake.not_a_regular_file(drop / "b.csv")
    assert "rule: not_a_file" in intake.not_a_regular_file(drop / "c.jsonl")
