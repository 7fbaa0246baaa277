"""Why a training run ended, as a reason code (recorded in reports/train/metrics.json) and in words: the question a
user asks before trusting, or re-running, an epoch budget. Standard library only: the CLI prints it without torch."""
from __future__ import annotations


def describe_stop(reason: str, epochs_run: int, best_epoch: int, patience: int, metric: str = "macro-F1") -> str:
    """Why a run ended, in words: the question a user asks before trusting (or re-running) a budget."""
    if reason == "early_stopped":
        return (f"stopped early after epoch {epochs_run}: no validation gain for {patience} epochs "
                f"(best epoch {best_epoch})")
    if reason == "still_improving":
        return (f"validation {metric} was still improving at the last epoch of the budget ({epochs_run}): "
                "more epochs may help (raise train.max_epochs)")
    return f"used the whole budget of {epochs_run} epochs; validation peaked at epoch {best_epoch}"


STOP_REASONS = ("early_stopped", "budget", "still_improving")


def stop_reason(stopped: bool, best_epoch: int, epochs_run: int) -> str:
    if stopped:
        return "early_stopped"
    return "still_improving" if best_epoch == epochs_run else "budget"
