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
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from tasks.files.tables import DataFileError, read_table
from tasks.kinds.base import LABEL, RequiredColumn, input_and_label, number_rows, read_input_table, rename_to_canonical
from tasks.kinds.labelled import RowLabelKind, label_ids

IMAGE, PATH, PIXELS = "image", "path", "pixels"
SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CROP_MARGIN = 8 / 7  # stored side = image_size x this: room for random crops (the usual 256 -> 224)


def stored_side(image_size: int) -> int:
    return int(round(image_size * CROP_MARGIN))


def inspect(data: Optional[bytes], min_side: int) -> tuple[str, str, str, int, int]:
    """(rule, detail, mode, width, height) for one image's bytes; rule "" when it decodes fully."""
    from PIL import Image, UnidentifiedImageError

    if data is None:
        return "missing_file", "no such file", "", 0, 0
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode, (w, h) = im.mode, im.size
            im.load()  # decodes every byte: a truncated file fails here, not in the middle of training
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
    """Decode, RGB, resize the shorter side to `side`, centre-crop a square: uint8 (side, side, 3)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = to_rgb(im)
        w, h = im.size
        scale = side / min(w, h)
        im = im.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.BICUBIC)
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
    """ImageFolder layout: root/<class>/<image>; non-image files are ignored, hidden folders too."""
    rows = [(str(p), p.parent.name) for p in sorted(root.glob("*/*"))
            if p.is_file() and p.suffix.lower() in SUFFIXES and not p.parent.name.startswith(".")]
    if not rows:
        raise DataFileError(f"{root}: no images found in class folders (expected {root}/<class>/<image>)")
    return pd.DataFrame(rows, columns=[PATH, LABEL])


def read_bytes(path: str) -> Optional[bytes]:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


class ImageKind(RowLabelKind):
    name = "image-classification"
    columns = (IMAGE, LABEL)
    display_column = PATH
    auto_class = "AutoModelForImageClassification"
    peft_task = ""  # no PEFT task type: adapters on train.lora.target_modules, the new head trained in full
    baseline_name = "baseline_frozen_features_logreg"
    baseline_description = "logistic regression on frozen pre-trained features"
    # Processed rows keep their pixels, not the image bytes: another model scores the same pixels (nothing to drop).
    encoded_columns = ()

    # --- data --------------------------------------------------------------------------------------------------
    def read_source(self, cfg) -> pd.DataFrame:
        if not cfg.path:
            from tasks.kinds.image_default import default_image_frame

            return self.canonical(default_image_frame())
        return self.read_file(Path(cfg.path), cfg)

    def read_file(self, path: Path, cfg) -> pd.DataFrame:
        if path.is_dir():
            return self.canonical(read_image_folder(path))
        df = read_table(path, "auto", cfg.encoding, cfg.delimiter, cfg.max_bytes, cfg.max_rows)
        df = rename_to_canonical(df, {cfg.image_column: PATH, cfg.label_column: LABEL}, also=(IMAGE,))
        if PATH in df.columns:  # paths are relative to the table's own folder
            df[PATH] = [str(p) if Path(str(p)).is_absolute() else str(path.parent / str(p)) for p in df[PATH]]
        return self.canonical(df)

    def canonical(self, df: pd.DataFrame) -> pd.DataFrame:
        if IMAGE not in df.columns and PATH in df.columns:  # the embedded default comes with its bytes
            df = df.assign(**{IMAGE: [read_bytes(p) for p in df[PATH]]})
        return number_rows(df)

    def source_label(self, cfg) -> str:
        if cfg.path:
            return str(cfg.path)
        from tasks.kinds.image_default import DEFAULT_DATA_LABEL

        return DEFAULT_DATA_LABEL

    def required_columns(self, cfg, labelled: bool) -> list[RequiredColumn]:
        return input_and_label(cfg, labelled, (PATH, "image_column"), (LABEL, "label_column"))

    def row_rules(self, df, data_cfg, cfg, allowed, labelled, mark) -> dict:
        found = pd.DataFrame([inspect(b, cfg.min_image_side) for b in df[IMAGE]], index=df.index,
                             columns=["rule", "detail", "mode", "width", "height"])
        where = " (" + df[PATH].astype(str) + ")"
        for rule in ("missing_file", "unreadable", "truncated", "tiny_image"):
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

    def profile_report(self, accepted: pd.DataFrame) -> dict:
        sizes = pd.DataFrame([inspect(b, 1)[3:] for b in accepted[IMAGE]], columns=["width", "height"])
        return {"length": {k: {s: float(v) for s, v in sizes[k].describe().items() if s != "count"}
                           for k in ("width", "height")}}

    # --- preprocess --------------------------------------------------------------------------------------------
    def group_key(self, df: pd.DataFrame) -> pd.Series:
        return df[IMAGE].map(lambda b: hashlib.sha256(b).hexdigest())

    def encode(self, part: pd.DataFrame, processor, cfg, labels: list[str]) -> tuple[pd.DataFrame, dict]:
        side = stored_side(cfg.image_size)
        sizes = [inspect(b, 1)[3:] for b in part[IMAGE]]
        table = part.reset_index(drop=True).drop(columns=[IMAGE]).assign(
            pixels=[square(b, side).tobytes() for b in part[IMAGE]],
            width=[s[0] for s in sizes], height=[s[1] for s in sizes], side=side, image_size=cfg.image_size)
        if LABEL in table.columns:
            table["label_id"] = label_ids(table[LABEL], labels)
        return table, {"stored_side": side, "image_size": cfg.image_size}

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
        """What the saved model directory carries: the base's normalisation at the size training cropped to (what
        `transformers.pipeline("image-classification")` and `tuneline predict` then use)."""
        from transformers import ViTImageProcessor

        size = int(train["image_size"].iloc[0])
        return ViTImageProcessor(size={"height": size, "width": size},
                                 image_mean=list(processor.image_mean), image_std=list(processor.image_std))

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
    def baseline(self, train, test, labels, cfg, seed, base_model) -> np.ndarray:
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
        """A folder of images (any depth), or a CSV/Parquet/JSONL with an image path column."""
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            df = pd.DataFrame({PATH: [str(p) for p in files]})
        else:
            df, column = read_input_table(path, [column or IMAGE], "image")
            if not len(df.columns):
                df = pd.DataFrame({PATH: pd.Series(dtype=str)})
            else:
                df = df.assign(**{PATH: [str(p) if Path(str(p)).is_absolute() else str(path.parent / str(p))
                                         for p in df[column]]})
        images = [read_bytes(p) for p in df[PATH]]
        bad = [(p, inspect(b, 1)) for p, b in zip(df[PATH], images) if inspect(b, 1)[0]]
        if bad:
            path_, (rule, detail, *_) = bad[0]
            raise DataFileError(f"{path_}: {detail} (rule: {rule}); {len(bad)} of {len(df)} images cannot be read")
        out = df.assign(**{IMAGE: images})
        out.attrs["internal"] = [IMAGE]
        return out

    def describe(self, frame: pd.DataFrame, processor) -> pd.DataFrame:
        frame = self._with_encoding(frame, processor)
        side = int(frame["side"].iloc[0]) if len(frame) else 1
        grey = [np.frombuffer(b, dtype=np.uint8).reshape(side, side, 3).mean(axis=2) for b in frame[PIXELS]]
        out = pd.DataFrame({
            "brightness": [float(g.mean()) for g in grey], "contrast": [float(g.std()) for g in grey],
            "width": frame["width"].astype(float).to_numpy(), "height": frame["height"].astype(float).to_numpy()})
        out["aspect_ratio"] = out["width"] / out["height"].where(out["height"] > 0, 1)
        return out
