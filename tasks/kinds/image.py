"""Image classification: one image and one label per row (transformers' `image-classification`).

Sources: a folder per class (ImageFolder layout), or a CSV/Parquet of image paths (relative to the file) and labels.
The image bytes are read in at prepare, so DVC versions the data set itself, not only the paths.
Rules: missing/unreadable/truncated files, tiny images, non-RGB modes (converted or quarantined), duplicate images,
one image with two labels, blank/unknown labels; each quarantined with its path and reason, never a crash.
Encoding: RGB (alpha composited on white), shorter side resized and centre-cropped to a stored square a little larger
than `preprocess.image_size`; training crops randomly inside it, flips and jitters colour (`train.image_augment`),
evaluation crops the centre. Model: AutoModelForImageClassification with a new head. Baseline: logistic regression
on the frozen pre-trained backbone's pooled features. Drift: brightness, contrast, size, predictions, embeddings.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from tasks.files.tables import DataFileError, read_table
from tasks.kinds.base import (LABEL, BadInput, RequiredColumn, input_and_label, number_rows, read_input_table,
                              rename_to_canonical)
from tasks.kinds.labelled import RowLabelKind, label_ids

IMAGE, PATH, PIXELS = "image", "path", "pixels"
# Why an image's bytes were not read (prepare, ingest): validate quarantines the row with this rule and detail.
READ_RULE, READ_DETAIL = "read_rule", "read_detail"
READ_RULES = ("unsafe_path", "not_a_file", "too_large", "missing_file")
DEFAULT_MAX_PIXELS = 64_000_000  # validate.max_image_pixels' default, for images checked outside validation
DEFAULT_MAX_BYTES = 50_000_000  # data.max_image_bytes' default, likewise
SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CROP_MARGIN = 8 / 7  # stored side = image_size x this: room for random crops (the usual 256 -> 224)


def stored_side(image_size: int) -> int:
    """The stored square's side: about image_size x 8/7, with an even margin, so the centre crop of the centre
    crop is the image's own centre crop to the pixel (what the saved processor does in one step)."""
    return image_size + 2 * round(image_size * (CROP_MARGIN - 1) / 2)


def read_image_file(path: Path, folder: Path, max_bytes: Optional[int]) -> tuple[Optional[bytes], str, str]:
    """(bytes, rule, detail) of an image a table or folder names; rule "" when read.

    The file must lie inside `folder` once every link is resolved (no absolute paths, no `..` out of it), be a
    regular file (not a device, FIFO or folder: opened without blocking and checked before a byte is read), and hold
    at most `max_bytes` (data.max_image_bytes)."""
    if path.is_absolute() and not path.resolve().is_relative_to(folder.resolve()):
        return None, "unsafe_path", "an absolute path outside the folder of the file that names it"
    try:
        resolved = (folder / path).resolve(strict=True)
    except FileNotFoundError:
        return None, "missing_file", "no such file"
    except (OSError, RuntimeError) as exc:  # a loop of links, a name too long
        return None, "unsafe_path", f"cannot resolve: {exc.__class__.__name__}"
    if not resolved.is_relative_to(folder.resolve()):
        return None, "unsafe_path", f"resolves outside {folder} (a `..` or a link out of it)"
    try:
        fd = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return None, "missing_file", f"cannot open: {exc.strerror}"
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None, "not_a_file", "not a regular file (a device, FIFO or folder)"
    if max_bytes is not None and info.st_size > max_bytes:
        os.close(fd)
        return None, "too_large", f"{info.st_size:,} bytes exceeds data.max_image_bytes={max_bytes:,}"
    with os.fdopen(fd, "rb") as fh:
        data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:  # it grew while being read
        return None, "too_large", f"more than data.max_image_bytes={max_bytes:,} bytes"
    return data, "", ""


def inspect(data: Optional[bytes], min_side: int,
            max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, str, str, int, int]:
    """(rule, detail, mode, width, height) for one image's bytes; rule "" when it decodes fully. The pixel count is
    checked from the header before anything is decoded (a small PNG can claim billions of pixels)."""
    from PIL import Image, UnidentifiedImageError

    if data is None:
        return "missing_file", "no such file", "", 0, 0
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode, (w, h) = im.mode, im.size
            if w * h > max_pixels:
                return "too_many_pixels", f"{w}x{h} pixels exceeds validate.max_image_pixels={max_pixels:,}", mode, w, h
            im.load()  # decodes every byte: a truncated file fails here, not in the middle of training
    except Image.DecompressionBombError as exc:
        return "too_many_pixels", f"{exc}", "", 0, 0
    except UnidentifiedImageError:
        return "unreadable", "not an image format Pillow can read", "", 0, 0
    except (OSError, SyntaxError, ValueError) as exc:
        return "truncated", f"cannot decode: {exc}", "", 0, 0
    if min(w, h) < min_side:
        return "tiny_image", f"{w}x{h} pixels is below validate.min_image_side={min_side}", mode, w, h
    return "", "", mode, w, h


def to_rgb(im):
    """RGB for every mode: alpha composited on white, palette/grey/CMYK converted."""
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def square(data: bytes, side: int) -> np.ndarray:
    """Decode, RGB, resize the shorter side to `side`, centre-crop a square: uint8 (side, side, 3). The resize
    rounds the longer side down, as transformers' image processors do, so both see the same pixels."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = to_rgb(im)
        w, h = im.size
        short, long = min(w, h), max(w, h)
        im = im.resize((side, int(side * long / short)) if w <= h else (int(side * long / short), side),
                       Image.BICUBIC)
        w, h = im.size
        left, top = (w - side) // 2, (h - side) // 2
        return np.asarray(im.crop((left, top, left + side, top + side)), dtype=np.uint8)


def processor_side(processor, default: int = 224) -> int:
    """The square side an image processor feeds its model (crop size, else size; dicts or SizeDicts)."""
    for attr in ("crop_size", "size"):
        value = getattr(processor, attr, None)
        if value is None:
            continue
        get = value.get if hasattr(value, "get") else lambda k, v=value: getattr(v, k, None)
        side = get("height") or get("shortest_edge")
        if side:
            return int(side)
    return default


def read_image_folder(root: Path) -> pd.DataFrame:
    """ImageFolder layout: root/<class>/<image>, as paths relative to root; non-image files are ignored, hidden
    folders too."""
    rows = [(str(p.relative_to(root)), p.parent.name) for p in sorted(root.glob("*/*"))
            if p.suffix.lower() in SUFFIXES and not p.parent.name.startswith(".")]
    if not rows:
        raise DataFileError(f"{root}: no images found in class folders (expected {root}/<class>/<image>)")
    return pd.DataFrame(rows, columns=[PATH, LABEL])


def with_images(df: pd.DataFrame, folder: Path, max_bytes: Optional[int]) -> pd.DataFrame:
    """Each row's image bytes read from its path (relative to `folder`), or the rule that refused it; the path
    column then names the file as a person finds it."""
    found = [read_image_file(Path(str(p)), folder, max_bytes) for p in df[PATH]]
    return df.assign(**{IMAGE: [f[0] for f in found], READ_RULE: [f[1] for f in found],
                        READ_DETAIL: [f[2] for f in found],
                        PATH: [str(folder / str(p)) for p in df[PATH]]})


class ImageKind(RowLabelKind):
    name = "image-classification"
    columns = (IMAGE, LABEL)
    display_column = PATH
    auto_class = "AutoModelForImageClassification"
    peft_task = ""  # no PEFT task type: adapters on train.lora.target_modules, the new head trained in full
    # Measured (benchmarks/precision_quality.py, EfficientNet-Lite0 on the digits at 64 px, 2-core Zen 4): bf16
    # training lost 4.6 points of test macro-F1 and ran 3x slower (CPU bf16 convolutions), and the fp32 model
    # predicted in bf16 changed 1.4% of the labels. precision auto keeps fp32 for images.
    bf16_ok = False
    baseline_name = "baseline_frozen_features_logreg"
    baseline_description = "logistic regression on frozen pre-trained features"
    # Processed rows keep their pixels, not the image bytes: another model scores the same pixels (nothing to drop).
    encoded_columns = ()

    # --- data --------------------------------------------------------------------------------------------------
    def read_source(self, cfg) -> pd.DataFrame:
        if not cfg.path:
            from tasks.kinds.image_default import default_image_frame

            return number_rows(default_image_frame().assign(**{READ_RULE: "", READ_DETAIL: ""}))
        return self.read_file(Path(cfg.path), cfg)

    def read_file(self, path: Path, cfg) -> pd.DataFrame:
        """A folder per class, or a table of image paths relative to the table's own folder (nothing outside it)."""
        if path.is_dir():
            return number_rows(with_images(read_image_folder(path), path, cfg.max_image_bytes))
        df = read_table(path, "auto", cfg.encoding, cfg.delimiter, cfg.max_bytes, cfg.max_rows)
        df = rename_to_canonical(df, {cfg.image_column: PATH, cfg.label_column: LABEL},
                                 also=(IMAGE, READ_RULE, READ_DETAIL))
        if PATH in df.columns:
            df = with_images(df, path.parent, cfg.max_image_bytes)
        return number_rows(df)

    def source_label(self, cfg) -> str:
        if cfg.path:
            return str(cfg.path)
        from tasks.kinds.image_default import DEFAULT_DATA_LABEL

        return DEFAULT_DATA_LABEL

    def required_columns(self, cfg, labelled: bool) -> list[RequiredColumn]:
        return input_and_label(cfg, labelled, (PATH, "image_column"), (LABEL, "label_column"))

    def row_rules(self, df, data_cfg, cfg, allowed, labelled, mark, budget=None) -> dict:
        where = " (" + df[PATH].astype(str) + ")"
        for rule in READ_RULES:  # refused before a byte was read: outside the folder, not a file, too large
            mark(df[READ_RULE] == rule, rule, df[READ_DETAIL] + where)
        found = pd.DataFrame([inspect(b, cfg.min_image_side, cfg.max_image_pixels) if r == "" else
                              (r, "", "", 0, 0) for b, r in zip(df[IMAGE], df[READ_RULE])], index=df.index,
                             columns=["rule", "detail", "mode", "width", "height"])
        for rule in ("missing_file", "unreadable", "truncated", "too_many_pixels", "tiny_image"):
            mark(found["rule"] == rule, rule, found["detail"] + where)
        label = self.label_rules(df, data_cfg.label_column, allowed, labelled, mark, where)
        other_mode = (found["mode"] != "RGB") & (found["rule"] == "")
        if cfg.image_mode_action == "quarantine":
            mark(other_mode, "image_mode", "mode " + found["mode"] + " is not RGB (validate.image_mode_action)" + where)
        digest = df[IMAGE].map(lambda b: hashlib.sha256(b).hexdigest() if b is not None else "")
        if labelled and cfg.drop_conflicting_labels:
            mark.conflicting(digest, label)
        if cfg.drop_duplicates:
            mark.duplicates(digest, "duplicate_image", "same image bytes as row {first}")
        modes = found.loc[other_mode & mark.live, "mode"].value_counts()
        return {"converted_modes": {str(k): int(v) for k, v in modes.items()}} if cfg.image_mode_action == "convert" else {}

    def clean(self, accepted: pd.DataFrame, labelled: bool) -> pd.DataFrame:
        return super().clean(accepted.drop(columns=[READ_RULE, READ_DETAIL], errors="ignore"), labelled)

    def profile_report(self, accepted: pd.DataFrame) -> dict:
        sizes = pd.DataFrame([inspect(b, 1)[3:] for b in accepted[IMAGE]], columns=["width", "height"])
        return {"length": {k: {s: float(v) for s, v in sizes[k].describe().items() if s != "count"}
                           for k in ("width", "height")}}

    # --- preprocess --------------------------------------------------------------------------------------------
    def group_key(self, df: pd.DataFrame) -> pd.Series:
        return df[IMAGE].map(lambda b: hashlib.sha256(b).hexdigest())

    def encode(self, part: pd.DataFrame, processor, cfg, labels: list[str]) -> tuple[pd.DataFrame, dict]:
        size = cfg.image_size or processor_side(processor)  # null: the model's own input size
        side = stored_side(size)
        sizes = [inspect(b, 1)[3:] for b in part[IMAGE]]
        table = part.reset_index(drop=True).drop(columns=[IMAGE]).assign(
            pixels=[square(b, side).tobytes() for b in part[IMAGE]],
            width=[s[0] for s in sizes], height=[s[1] for s in sizes], side=side, image_size=size)
        if LABEL in table.columns:
            table["label_id"] = label_ids(table[LABEL], labels)
        return table, {"stored_side": side, "image_size": size}

    # --- model -------------------------------------------------------------------------------------------------
    def default_model(self) -> str:
        from tasks.kinds.image_default import default_image_model

        return str(default_image_model())

    def default_model_description(self) -> str:
        from tasks.kinds.image_default import DEFAULT_MODEL_DESCRIPTION

        return DEFAULT_MODEL_DESCRIPTION

    def load_processor(self, path: str):
        """The model's own image processor when it has one (mean/std, size); else ImageNet-free defaults."""
        from transformers import AutoImageProcessor, ViTImageProcessor

        try:
            return AutoImageProcessor.from_pretrained(path)
        except (OSError, ValueError):
            return ViTImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])

    def saved_processor(self, processor, train: pd.DataFrame):
        """What the saved model directory carries: the base's normalisation, and the resize (shorter side to the
        stored side, bicubic) and centre crop (the size training cropped to) that evaluation uses, so
        `transformers.pipeline("image-classification")` sees the pixels `tuneline predict` sees."""
        from PIL import Image
        from transformers import BitImageProcessor

        size = int(train["image_size"].iloc[0])
        return BitImageProcessor(size={"shortest_edge": stored_side(size)}, crop_size={"height": size, "width": size},
                                 resample=Image.BICUBIC, image_mean=list(processor.image_mean),
                                 image_std=list(processor.image_std), do_convert_rgb=True)

    def split(self, frame: pd.DataFrame, processor, train_cfg=None, max_length: Optional[int] = None):
        from tasks.engine.splits import ImageSplit

        frame = self._with_encoding(frame, processor)
        side = int(frame["side"].iloc[0]) if len(frame) else 1
        crop = int(frame["image_size"].iloc[0]) if len(frame) else 1
        pixels = [np.frombuffer(b, dtype=np.uint8).reshape(side, side, 3) for b in frame[PIXELS]]
        labels = frame["label_id"].to_numpy(np.int64) if "label_id" in frame.columns else np.zeros(len(frame), np.int64)
        return ImageSplit(pixels, labels, crop, np.asarray(processor.image_mean, dtype=np.float32),
                          np.asarray(processor.image_std, dtype=np.float32),
                          tuple(train_cfg.image_augment) if train_cfg is not None else ())

    def _with_encoding(self, frame: pd.DataFrame, processor) -> pd.DataFrame:
        """Rows read from files (predict, monitoring) are encoded at the size the model was trained at."""
        if PIXELS in frame.columns:
            return frame
        size = processor_side(processor)
        side = stored_side(size)
        return frame.assign(pixels=[square(b, side).tobytes() for b in frame[IMAGE]], side=side, image_size=size,
                            width=[inspect(b, 1)[3] for b in frame[IMAGE]],
                            height=[inspect(b, 1)[4] for b in frame[IMAGE]])

    # --- evaluation --------------------------------------------------------------------------------------------
    def baseline(self, train, test, labels, cfg, seed, base_model, generation=None) -> np.ndarray:
        """Logistic regression on the frozen pre-trained backbone's pooled features (centre crops)."""
        import torch
        from sklearn.linear_model import LogisticRegression
        from transformers import AutoModel

        from tasks.engine.batching import forward_batches, mean_pool
        from tasks.engine.device import pick_device
        from tasks.kinds import resolve_model

        path = resolve_model(base_model, self)
        processor = self.load_processor(path)
        backbone = AutoModel.from_pretrained(path, dtype=torch.float32)
        device = pick_device()
        backbone.to(device)

        def features(frame: pd.DataFrame) -> np.ndarray:
            split = self.split(frame, processor)
            out = np.zeros((len(frame), 0), dtype=np.float32)
            for idx, _, result in forward_batches(backbone, split, cfg.batch_size, device, "baseline features"):
                hidden = result.last_hidden_state
                pooled = mean_pool(hidden, None).cpu().numpy()
                out = np.zeros((len(frame), pooled.shape[1]), dtype=np.float32) if out.shape[1] == 0 else out
                out[idx] = pooled
            return out

        clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
        clf.fit(features(train), train[LABEL])
        return clf.predict(features(test)).astype(object)

    # --- serving and monitoring --------------------------------------------------------------------------------
    def read_predict_input(self, path: Path, column: Optional[str]) -> pd.DataFrame:
        """A folder of images (any depth), or a CSV/Parquet/JSONL with an image path column (paths relative to it)."""
        if path.is_dir():
            folder = path
            df = pd.DataFrame({PATH: [str(p.relative_to(path)) for p in sorted(path.rglob("*"))
                                      if p.suffix.lower() in SUFFIXES and not p.is_dir()]})
        else:
            folder = path.parent
            df, column = read_input_table(path, [column or IMAGE], "image")
            df = df.assign(**{PATH: df[column].astype(str)}) if len(df.columns) else pd.DataFrame({PATH: []})
        df = with_images(df, folder, DEFAULT_MAX_BYTES)
        checked = [(p, (r, d) if r else inspect(b, 1)[:2]) for p, b, r, d in
                   zip(df[PATH], df[IMAGE], df[READ_RULE], df[READ_DETAIL])]
        bad = [(p, why) for p, why in checked if why[0]]
        if bad:
            path_, (rule, detail) = bad[0]
            raise DataFileError(f"{path_}: {detail} (rule: {rule}); {len(bad)} of {len(df)} images cannot be read")
        out = df.drop(columns=[READ_RULE, READ_DETAIL])
        out.attrs["internal"] = [IMAGE]
        return out

    def request_input(self, value, field: str, limits) -> bytes:
        """A base64-encoded image (or its bytes), checked from the header for its pixel count, then decoded once."""
        import base64
        import binascii

        if isinstance(value, str):
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise BadInput(400, f"{field}: not valid base64") from None
        if not isinstance(value, (bytes, bytearray)):
            raise BadInput(422, f"{field}: an image (base64 in a JSON string) is expected, got {type(value).__name__}")
        rule, detail, *_ = inspect(bytes(value), 1, limits.max_image_pixels)
        if rule == "too_many_pixels":
            raise BadInput(413, f"{field}: {detail.replace('validate.max_image_pixels', 'serve.max_image_pixels')}")
        if rule:
            raise BadInput(422, f"{field}: {detail} (rule: {rule})")
        return bytes(value)

    def request_rows(self, inputs: list) -> pd.DataFrame:
        return pd.DataFrame({PATH: [f"inputs[{i}]" for i in range(len(inputs))], IMAGE: list(inputs)})

    def write_batch(self, rows: pd.DataFrame, path: Path, cfg) -> Path:
        """The images as files in a folder beside the table, the table naming them relative to its own folder (as
        read_file reads a table of paths)."""
        from PIL import Image

        from tasks.files.tables import write_table

        folder = path.with_name(path.stem + "-images")
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for i, data in enumerate(rows[IMAGE]):
            with Image.open(io.BytesIO(data)) as im:
                suffix = "." + (im.format or "png").lower().replace("jpeg", "jpg")
            name = f"{i:06d}{suffix}"
            (folder / name).write_bytes(data)
            names.append(f"{folder.name}/{name}")
        table = pd.DataFrame({cfg.image_column: names})
        if LABEL in rows.columns:
            table[cfg.label_column] = rows[LABEL].to_numpy()
        return write_table(table, path)

    def describe(self, frame: pd.DataFrame, processor) -> pd.DataFrame:
        frame = self._with_encoding(frame, processor)
        side = int(frame["side"].iloc[0]) if len(frame) else 1
        grey = [np.frombuffer(b, dtype=np.uint8).reshape(side, side, 3).mean(axis=2) for b in frame[PIXELS]]
        out = pd.DataFrame({
            "brightness": [float(g.mean()) for g in grey], "contrast": [float(g.std()) for g in grey],
            "width": frame["width"].astype(float).to_numpy(), "height": frame["height"].astype(float).to_numpy()})
        out["aspect_ratio"] = out["width"] / out["height"].where(out["height"] > 0, 1)
        return out
