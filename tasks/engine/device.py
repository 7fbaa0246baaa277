"""Where and how the engine computes: the device (`train.device: auto`) and the precision (`train.precision`,
`inference.precision`: auto picks bf16 where the hardware runs it natively).

Needs only torch, so the trainer runs on a bare GPU box.
"""
from __future__ import annotations

from typing import Optional

import torch


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 flags of native bf16 arithmetic (Zen 4+, Cooper Lake, SPR+)


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the kernel lists them (empty where /proc/cpuinfo does not say)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def physical_cores(cpuinfo: Optional[str] = None, allowed: Optional[set[int]] = None) -> int:
    """Cores this process may run on, counting SMT siblings once: torch's intra-op threads share a core's units,
    so a second thread per core adds contention, not arithmetic. From /proc/cpuinfo's (physical id, core id) pairs
    within this process's affinity; the logical count where the kernel does not say."""
    import os

    if allowed is None:
        allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    try:
        text = cpuinfo if cpuinfo is not None else open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return max(1, len(allowed))
    cores, cpu, socket = set(), None, "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            cpu, socket = int(value), "0"
        elif key == "physical id":
            socket = value
        elif key == "core id" and cpu in allowed:
            cores.add((socket, value))
    return max(1, len(cores) or len(allowed))


class Precision:
    """What arithmetic a run uses: fp32, or autocast to bf16 / fp16 around the forward pass (weights stay fp32)."""

    def __init__(self, name: str, reason: str):
        self.name, self.reason = name, reason

    @property
    def dtype(self) -> Optional[torch.dtype]:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self, device: torch.device):
        """The context a forward pass runs in: autocast for bf16/fp16, nothing for fp32."""
        import contextlib

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def __repr__(self) -> str:
        return f"Precision({self.name!r})"


def choose_precision(setting: str, device: torch.device, flags: Optional[set[str]] = None,
                     kind_allows_bf16: bool = True) -> Precision:
    """`auto`: bf16 where the device runs it natively (a CUDA GPU that supports it; a CPU whose flags show
    avx512_bf16 or AMX), fp32 elsewhere, and fp32 for a kind whose quality bf16 was measured to hurt. An explicit
    setting is used as given, except fp16 off CUDA and bf16 on a device without it (refused, naming the setting)."""
    from tasks.config import ConfigError

    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
        where = f"{torch.cuda.get_device_name(device)} {'supports' if native else 'lacks'} bf16"
    elif device.type == "cpu":
        found = sorted((flags if flags is not None else cpu_flags()) & set(CPU_BF16_FLAGS))
        native = bool(found)
        where = f"CPU flags {' '.join(found)}" if found else "this CPU has no avx512_bf16 or AMX flag"
    else:
        native, where = False, f"{device.type}: fp32"
    if setting == "fp32":
        return Precision("fp32", "precision fp32 (as set)")
    if setting == "fp16":
        if device.type != "cuda":
            raise ConfigError(f"precision fp16 runs on CUDA only; this run is on {device.type}: use auto, bf16 or fp32")
        return Precision("fp16", "precision fp16 (as set)")
    if setting == "bf16":
        if not native:
            raise ConfigError(f"precision bf16: {where}; use auto or fp32")
        return Precision("bf16", f"precision bf16 (as set; {where})")
    if native and not kind_allows_bf16:
        return Precision("fp32", f"precision auto: fp32 ({where}, but this task kind keeps fp32: bf16 cost it "
                                 "quality; README, CPU speed)")
    return Precision("bf16" if native else "fp32", f"precision auto: {'bf16' if native else 'fp32'} ({where})")
