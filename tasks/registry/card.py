"""A Hugging Face model card (README.md with YAML front matter) for a registered version."""
from __future__ import annotations

import yaml

from tasks.metrics import Baseline


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def model_card(record: dict, baseline: Baseline | None = None) -> str:
    params, metrics = record["params"], record["metrics"]
    kind = record.get("kind", "text-classification")
    front = {"library_name": "transformers", "pipeline_tag": kind,
             "tags": ["tuneline", kind], "base_model": record.get("base_model"),
             "metrics": ["accuracy", "f1"]}
    classes = _table(["class", "precision", "recall", "F1", "support"],
                     [[n, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1-score']:.3f}", int(v["support"])]
                      for n, v in metrics["per_class"].items()])
    headline = [["this model", f"{metrics['accuracy']:.4f}", f"{metrics['macro_f1']:.4f}",
                 f"{metrics['weighted_f1']:.4f}"]]
    if baseline:
        scores = baseline.scores
        headline.append([baseline.description, f"{scores['accuracy']:.4f}", f"{scores['macro_f1']:.4f}",
                         f"{scores['weighted_f1']:.4f}"])
    train = params["train"]
    return "\n".join([
        "---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
        f"# tuneline {kind} model, version {record['version']}", "",
        "## Intended use",
        f"{kind}: {', '.join(metrics['per_class'])}. Trained by tuneline on the data below; "
        "check the per-class figures before relying on it for a class, and re-evaluate on your own data when it "
        "differs from the training data (topic, phrasing, label balance).", "",
        "## Data",
        f"- source: {record.get('data_source')}",
        f"- DVC hashes: {record['data']}",
        f"- test rows: {metrics.get('n_test', 'n/a')}", "",
        "## Training",
        f"- base model: {record.get('base_model')}",
        f"- epochs {train['epochs']}, batch size {train['batch_size']}, learning rate {train['learning_rate']}, "
        f"weight decay {train['weight_decay']}, warmup {train['warmup_ratio']}, seed {train['seed']}",
        f"- max length {params['preprocess']['max_length']} tokens" if kind != "image-classification" else
        f"- image size {params['preprocess']['image_size'] or 'of the base model'} pixels", "",
        "## Evaluation (test split)", "",
        _table(["model", "accuracy", "macro-F1", "weighted-F1"], headline), "", classes, "",
        "## Lineage",
        f"- created {record['created']}, parent version {record['parent']}, code {record['code']}",
        f"- decision: {'promoted' if record['decision']['promoted'] else 'rejected'}: "
        + "; ".join(record["decision"]["reasons"]), "",
        f"Load it with `transformers.pipeline(\"{kind}\", model=DIR)` or `tuneline predict`.", "",
    ])
