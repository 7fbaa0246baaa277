"""A Hugging Face model card (README.md with YAML front matter) for a registered version."""
from __future__ import annotations

import yaml

from tasks.metrics import Baseline
from tasks.scoring import fmt, metric_name, shown


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def model_card(record: dict, baseline: Baseline | None = None) -> str:
    params, metrics = record["params"], record["metrics"]
    kind = record.get("kind", "text-classification")
    generation = kind == "text-generation"
    regression = "per_class" not in metrics and not generation
    # transformers' pipeline task: a regression is a one-output text classifier (problem_type regression).
    task = "text-classification" if kind == "text-regression" else kind
    front = {"library_name": "transformers", "pipeline_tag": task,
             "tags": ["tuneline", kind], "base_model": record.get("base_model"),
             "metrics": (["rmse", "mae", "r2", "spearman"] if regression else ["exact_match", "chrf", "rouge"]
                         if generation else ["accuracy", "f1"])}
    classes = "" if regression or generation else _table(
        ["class", "precision", "recall", "F1", "support"],
        [[n, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1-score']:.3f}", int(v["support"])]
         for n, v in metrics["per_class"].items()])
    columns = shown(metrics)
    headline = [["this model", *[fmt(metrics[c]) for c in columns]]]
    if baseline:
        headline.append([baseline.description, *[fmt(baseline.scores.get(c)) for c in columns]])
    subject = ("a score per text (regression)" if regression else
               "answers to prompts (a causal LM fine-tuned on prompt/answer pairs in its chat template)" if generation
               else f"{kind}: {', '.join(metrics['per_class'])}")
    train, ran = params["train"], record.get("training", {})
    return "\n".join([
        "---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
        f"# tuneline {kind} model, version {record['version']}", "",
        "## Intended use",
        f"{subject}. Trained by tuneline on the data below; "
        + ("check the residuals" if regression else "read a sample of its answers to your own prompts" if generation
           else "check the per-class figures before relying on it for a class")
        + ", and re-evaluate on your own data when it differs from the training data (topic, phrasing, "
        + ("target range)." if regression else "answer style)." if generation else "label balance)."), "",
        "## Data",
        f"- source: {record.get('data_source')}",
        f"- DVC hashes: {record['data']}",
        f"- test rows: {metrics.get('n_test', 'n/a')}", "",
        "## Training",
        f"- base model: {record.get('base_model')}",
        f"- epochs {ran.get('epochs_run', train['epochs'])} (train.epochs {train['epochs']}), batch size "
        f"{ran.get('batch_size', train['batch_size'])}, learning rate {ran.get('learning_rate', train['learning_rate'])}"
        f" (train.learning_rate {train['learning_rate']}), optimizer {train.get('optimizer', 'adamw')}, weight decay "
        f"{train['weight_decay']}, warmup {train['warmup_ratio']}, seed {train['seed']}",
        f"- max length {params['preprocess']['max_length']} tokens" if kind != "image-classification" else
        f"- image size {params['preprocess']['image_size'] or 'of the base model'} pixels", "",
        "## Evaluation (test split)", "",
        _table(["model", *[metric_name(c) for c in columns]], headline), "", classes, "",
        "## Lineage",
        f"- created {record['created']}, parent version {record['parent']}, code {record['code']}",
        f"- decision: {'promoted' if record['decision']['promoted'] else 'rejected'}: "
        + "; ".join(record["decision"]["reasons"]), "",
        f"Load it with `transformers.pipeline(\"{task}\", model=DIR)` or `tuneline predict`.", "",
    ])
