"""Batches and the retraining decision: validated before stored; retraining needs drift or an F1 drop, and labels."""
from __future__ import annotations

import pandas as pd
import pytest

from tasks.config import DataConfig, MonitorConfig, ValidateConfig
from tasks.files.tables import write_text
from tasks.monitoring import drift, monitor
from tasks.monitoring.batches import BatchRejected, BatchStore
from tasks.monitoring.decision import decide
from tests.conftest import LABELS


def summary_with(drifted: int, total: int = 9, live_f1: float | None = None) -> drift.DriftSummary:
    columns = [drift.ColumnDrift(f"c{i}", "descriptor", "K-S p_value", 0.0, 0.05, i < drifted) for i in range(total)]
    return drift.DriftSummary(100, 100, columns, {"macro_f1": live_f1, "accuracy": 0.5, "rows": 100}
                              if live_f1 is not None else None)


def test_decision_policy_names_its_figures_and_needs_labelled_data():
    cfg = MonitorConfig(drift_share=0.5, max_f1_drop=0.05, min_new_labelled_rows=1000)
    quiet = decide(summary_with(2), cfg, 0.80, pending_labelled_rows=100)
    assert not quiet.retrain and quiet.reasons == ["drift share 0.22 < monitor.drift_share 0.5 (drifted: c0, c1)"]
    assert decide(summary_with(5), cfg, 0.80, 100).retrain
    dropped = decide(summary_with(0, live_f1=0.70), cfg, 0.80, 100)
    assert dropped.retrain and "drop +0.1000 >= monitor.max_f1_drop 0.05" in dropped.reasons[1]
    assert decide(summary_with(0), cfg, 0.80, pending_labelled_rows=1000).retrain
    unlabelled = decide(summary_with(9), cfg, 0.80, pending_labelled_rows=0)
    assert not unlabelled.retrain and "label new data" in unlabelled.reasons[-1]


def write_csv(path, rows: list[tuple[str, str | None]]):
    pd.DataFrame(rows, columns=["text", "sentiment"]).to_csv(path, index=False)
    return path


def test_ingest_stores_a_valid_batch_once_and_refuses_bad_ones_without_writing(tmp_path):
    store = BatchStore(tmp_path / "batches")
    data_cfg, val_cfg = DataConfig(text_column="text", label_column="sentiment"), ValidateConfig(min_rows=5)
    good = write_csv(tmp_path / "good.csv", [(f"flight {i} was late\r again", LABELS[i % 3]) for i in range(30)])
    info = store.ingest(good, data_cfg, val_cfg, LABELS)
    assert info.labelled and info.rows_accepted == 30 and info.id.startswith("b0001-")
    assert (tmp_path / "batches" / info.id / "batch.parquet").exists()

    with pytest.raises(BatchRejected, match="already ingested as batch b0001-"):
        store.ingest(good, data_cfg, val_cfg, LABELS)
    # Stored but never drift-checked (a crash between the two steps): monitoring checks it rather than refusing it.
    reports = tmp_path / "reports"
    assert monitor.stored_unchecked(store, reports, good) == info
    write_text("{}\n", reports / info.id / "drift.json")
    assert monitor.stored_unchecked(store, reports, good) is None
    stray = write_csv(tmp_path / "stray.csv", [(f"tweet {i}", "angry") for i in range(30)])
    with pytest.raises(BatchRejected, match=r"stray\.csv: 100\.0% of rows fail row-level rules \(\{'unknown_label': 30\}"):
        store.ingest(stray, data_cfg, val_cfg, LABELS)
    pd.DataFrame({"body": ["x"] * 30, "sentiment": ["negative"] * 30}).to_csv(tmp_path / "cols.csv", index=False)
    with pytest.raises(BatchRejected, match=r"cols\.csv: required column 'text' \(data.text_column\) is missing"):
        store.ingest(tmp_path / "cols.csv", data_cfg, val_cfg, LABELS)
    assert [b.id for b in store.batches()] == [info.id]  # the refused files left nothing behind

    unlabelled = tmp_path / "unlabelled.csv"
    pd.DataFrame({"text": [f"new tweet {i}" for i in range(20)]}).to_csv(unlabelled, index=False)
    second = store.ingest(unlabelled, data_cfg, val_cfg, LABELS)
    assert not second.labelled and second.id.startswith("b0002-")
    assert [b.id for b in store.pending_labelled(pool=[])] == [info.id]  # only labelled batches can join training
    assert store.pending_labelled(pool=[info.id]) == []


def test_a_batch_without_the_configured_label_column_is_stored_unlabelled_and_says_so(tmp_path):
    store = BatchStore(tmp_path / "batches")
    src = tmp_path / "b.csv"
    pd.DataFrame({"text": [f"tweet {i} here" for i in range(10)], "label": ["negative"] * 10}).to_csv(src, index=False)
    info = store.ingest(src, DataConfig(label_column="sentiment"), ValidateConfig(min_rows=5), LABELS)
    assert not info.labelled and info.rows_accepted == 10
    assert info.note == ("the configured label column 'sentiment' (data.label_column) was not found (columns: text, "
                         "label): stored unlabelled, so it is monitored for drift but not used for retraining")
    assert store.get(info.id).note == info.note  # kept with the batch


def test_a_pool_batch_of_another_task_kind_is_left_out_and_named(tmp_path):
    from tasks.stages import prepare

    store = BatchStore(tmp_path / "batches")
    src = tmp_path / "b.csv"
    pd.DataFrame({"text": [f"tweet {i} here" for i in range(10)], "sentiment": LABELS * 3 + ["neutral"]}).to_csv(
        src, index=False)
    text_batch = store.ingest(src, DataConfig(), ValidateConfig(min_rows=5), LABELS)
    assert text_batch.kind == "text-classification"
    assert store.pending_labelled([], "token-classification") == []  # another kind's batch never joins its pool
    result = prepare.run(DataConfig(batches=[text_batch.id]), tmp_path / "raw.parquet", store.root,
                         kind="token-classification")  # the project switched to tokens (WNUT-16 default)
    assert result.rows_out == result.rows_in == 2394
    assert f"data.batches {text_batch.id} hold another task kind's rows: left out" in result.filtered()
