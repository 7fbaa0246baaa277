"""Served traffic back into monitoring. LitServe runs this logger in one process of its own: the inference workers
send it the rows they answered (a serve.log_share of the requests), and /feedback sends it true labels.

Rows are written to a rotating Parquet file under .tuneline/serve/<port>/traffic/ (input, prediction, confidence,
model version, request id, time). When the file holds serve.rotate_rows rows or is serve.rotate_minutes old, it is
closed, kept, and its inputs go into the drop folder as an unlabelled batch, which the monitoring flow checks for
drift against the production model like any batch; so do the rows of an unfinished file when the server stops. The
labels /feedback received for logged rows since the last rotation go in at the same time as a labelled batch, so the
live-F1 rule and the training pool see them.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import litserve as ls

log = logging.getLogger("tuneline.traffic")
KEEP_ROTATIONS = 3  # rows of this many rotations can still receive their labels
WRITE_EVERY_ROWS = 256  # rows gathered before one row group goes to the traffic file


class TrafficLog(ls.Logger):
    def __init__(self, folder: str, drop_dir: str, production: str, data_cfg: dict, rotate_rows: int,
                 rotate_s: float):
        super().__init__()
        self.folder, self.drop_dir, self.production = Path(folder), Path(drop_dir), production
        self.data_cfg, self.rotate_rows, self.rotate_s = data_cfg, rotate_rows, rotate_s
        self.rows: list[dict] = []  # this rotation's rows, for its batch
        self.unwritten: list[dict] = []  # rows not yet in the traffic file
        self.opened: Optional[float] = None
        self.recent: OrderedDict[str, list[dict]] = OrderedDict()  # request id -> its logged rows
        self.labels: dict[str, list[Any]] = {}  # request id -> labels not yet written as a batch
        self.writer = None
        self.path: Optional[Path] = None

    def __setstate__(self, state: dict) -> None:
        """Unpickled in the logger process LitServe spawns. From then on Ctrl-C is the main process's to handle, and
        the rows not yet rotated go into the drop folder when the server stops: the main process queues "stop" (after
        the rows already queued), and a SIGTERM sent to the server's whole process group (systemd, `docker stop` of
        a container, tuneline's own stop) ends this process the same way."""
        import signal

        from tasks.orchestration.signals import ignore_terminal_interrupt

        self.__dict__.update(state)
        self.busy = self.stopping = False
        ignore_terminal_interrupt()
        signal.signal(signal.SIGTERM, self.on_sigterm)

    def on_sigterm(self, signum, frame) -> None:
        if self.busy:  # in the middle of a row or a write: finish it first (process() stops after it)
            self.stopping = True
        else:  # waiting for the queue
            self.stop()

    def stop(self) -> None:
        """Rotate what this rotation holds, then end the process (LitServe's loop lets SystemExit through)."""
        if self.rows:
            try:
                self.rotate()
            except Exception:
                log.exception("traffic: %d rows not rotated at shutdown; %s keeps those written", len(self.rows),
                              self.path)
        raise SystemExit(0)

    def process(self, key: str, value: Any) -> None:
        if key == "stop":
            self.stop()
        self.busy = True
        try:
            if key == "traffic":
                self.append(value)
            elif key == "feedback":
                self.labels[value["request_id"]] = value["labels"]
            if self.due():
                self.rotate()
        except Exception:  # a failing log never stops serving
            log.exception("traffic logging failed (%s)", key)
        finally:
            self.busy = False
        if self.stopping:
            self.stop()

    def due(self) -> bool:
        return bool(self.rows) and (len(self.rows) >= self.rotate_rows or
                                    time.time() - (self.opened or time.time()) >= self.rotate_s)

    def append(self, rows: list[dict]) -> None:
        from tasks.serving import metrics

        if self.opened is None:
            self.opened = time.time()
        self.rows.extend(rows)
        self.unwritten.extend(rows)
        for row in rows:
            self.recent.setdefault(row["request_id"], []).append(row)
        metrics.TRAFFIC_ROWS.inc(len(rows))
        if len(self.unwritten) >= WRITE_EVERY_ROWS:
            self.write()

    def write(self) -> None:
        """The rows not yet in the traffic file, as one row group: a batch of 16 rows per write cost the logger,
        which shares the CPU with the workers, 6.6% of the server's requests/s."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.unwritten:
            return
        table = pa.Table.from_pylist(self.unwritten)
        if self.writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.path = self.folder / f"traffic-{stamp()}.parquet"
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table.cast(self.writer.schema))
        self.unwritten = []

    def rotate(self) -> None:
        """Close the current file and drop its inputs as an unlabelled batch, and the labelled rows as another."""
        import pandas as pd

        from tasks.config import DataConfig
        from tasks.kinds import kind_of_model

        kind = kind_of_model(self.production)
        cfg = DataConfig.model_validate(self.data_cfg)
        when = stamp()
        self.drop_dir.mkdir(parents=True, exist_ok=True)
        self.write()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        rows = pd.DataFrame(self.rows)
        kind.write_batch(rows, self.drop_dir / f"traffic-{when}.parquet", cfg)
        labelled = self.labelled_rows(kind.label_column)
        if labelled:
            kind.write_batch(pd.DataFrame(labelled), self.drop_dir / f"traffic-{when}-labelled.parquet", cfg)
        log.warning("traffic: %d rows (%d labelled) -> %s", len(rows), len(labelled), self.drop_dir)
        self.rows, self.opened = [], None
        while len(self.recent) > KEEP_ROTATIONS * self.rotate_rows:
            self.recent.popitem(last=False)

    def labelled_rows(self, label_column: str) -> list[dict]:
        """Logged rows with the labels /feedback gave them (one label per input of the request)."""
        out = []
        for request_id, labels in list(self.labels.items()):
            rows = self.recent.get(request_id)
            if rows is None:
                continue  # not logged here (not in the logged share, or rotated out long ago): nothing to label
            for row in rows:
                if row["index"] < len(labels) and labels[row["index"]] is not None:
                    out.append({**row, label_column: labels[row["index"]]})
            del self.labels[request_id]
        return out


def stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
