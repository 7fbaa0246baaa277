"""Image classification: bad images are quarantined, or named when given to predict, with their path and rule."""
from __future__ import annotations

import io

import numpy as np
import pytest

from tasks import checks
from tasks.config import DataConfig
from tests.conftest import IMAGE, LENIENT, make_images


def test_bad_images_are_quarantined_with_path_and_rule(tmp_path):
    from PIL import Image

    root = make_images(tmp_path / "imgs", per_class=6)
    good = (root / "red" / "0.png").read_bytes()
    (root / "red" / "truncated.jpg").write_bytes(jpeg(64)[:300])
    Image.fromarray(np.full((48, 48, 4), 200, np.uint8), "RGBA").save(root / "blue" / "alpha.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(root / "blue" / "one-pixel.png")
    (root / "blue" / "not-an-image.png").write_bytes(b"plain text")
    (root / "blue" / "copy.png").write_bytes(good)  # same bytes as red/0.png, another label
    cfg = DataConfig(path=str(root))
    frame = IMAGE.read_source(cfg)

    def rule_of(outcome) -> dict[str, str]:
        return {p.split("/imgs/")[1]: r for p, r in zip(outcome.quarantine["path"], outcome.quarantine["rule"])}

    converted = checks.check(frame, cfg, LENIENT, str(root), kind=IMAGE)
    assert rule_of(converted) == {"red/truncated.jpg": "truncated", "blue/one-pixel.png": "tiny_image",
                                  "blue/not-an-image.png": "unreadable", "blue/copy.png": "conflicting_label",
                                  "red/0.png": "conflicting_label"}
    assert converted.report.kind_flags == {"converted_modes": {"RGBA": 1}}
    details = " | ".join(converted.quarantine["detail"])
    assert "1x1 pixels is below validate.min_image_side=32" in details and "truncated" in details
    strict = checks.check(frame, cfg, LENIENT.model_copy(update={"image_mode_action": "quarantine"}), str(root),
                            kind=IMAGE)
    assert rule_of(strict)["blue/alpha.png"] == "image_mode"
    # Accepted images are decoded to RGB squares; the alpha one lands on white.
    table, _ = IMAGE.encode(converted.accepted, None, type("Cfg", (), {"image_size": 28})(), ["blue", "green", "red"])
    alpha = table[table["path"].str.endswith("alpha.png")]["pixels"].iloc[0]
    pixels = np.frombuffer(alpha, np.uint8)
    assert len(pixels) == 32 * 32 * 3 and abs(pixels.astype(int) - 212).max() <= 1  # grey 200 at alpha 200 on white


def test_a_bad_image_given_to_predict_is_named(tmp_path, tiny_image_model):
    from tasks.stages import predict
    from tasks.files.tables import DataFileError

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "ok.jpg").write_bytes(jpeg(40))
    (folder / "broken.jpg").write_bytes(jpeg(40)[:200])
    with pytest.raises(DataFileError, match=r"broken\.jpg: cannot decode: .* \(rule: truncated\); 1 of 2 images"):
        predict.run(folder, tmp_path / "out.csv", tiny_image_model)
    assert not (tmp_path / "out.csv").exists()


def jpeg(side: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()
