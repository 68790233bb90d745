"""What the numbers of a computing rule depend on, and the settings that fix them.

:func:`configure_torch` applies the campaign's ``compute`` settings (intra-op threads,
deterministic kernels) in every ``train`` and ``infer`` process, whatever the scheduler's cores;
:func:`runtime_record` describes the process: library versions (torch, oneDNN, MKL, CUDA,
cuDNN), the thread count, the CPU's instruction sets that change float results (AVX-512,
AVX512-BF16, AMX), the GPU model, bf16 autocast and the determinism settings. Each rule writes
its record (``runtime/<rule>_<method>.json``); the manifest collects them and ``climai verify``
names the items that differ between two runs.
"""

from __future__ import annotations

import logging
import os
import platform
import re
from typing import Any

import torch

from climai.launch import available_cpus

log = logging.getLogger("climai")

#: cuBLAS's workspace setting that makes its GEMMs deterministic (CUDA >= 10.2).
CUBLAS_WORKSPACE = ":4096:8"
#: CPU flags (``/proc/cpuinfo``) that select other kernels, hence other float results.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def configure_torch(threads: int, deterministic: bool) -> None:
    """Torch's intra-op ``threads`` and, when ``deterministic``, deterministic kernels only
    (``torch.use_deterministic_algorithms``, the cuBLAS workspace, no cuDNN autotuning).

    The thread count is kept on fewer CPUs too (the numbers depend on it), with a warning: threads
    waiting for a busy core are slow."""
    if threads > available_cpus():
        log.warning(
            "compute.threads=%d but this process may use %d CPU(s): the same numbers, more slowly "
            "(compute.threads: %d would be faster here, and change the numbers)",
            threads,
            available_cpus(),
            available_cpus(),
        )
    torch.set_num_threads(max(1, threads))
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    if torch.are_deterministic_algorithms_enabled() != deterministic:
        # the call imports torch._inductor (~2.5 s) even to keep the default off
        torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = deterministic


def cpu_features(cpuinfo: str) -> dict[str, Any]:
    """The CPU model and which of :data:`CPU_FLAGS` it has, from the text of ``/proc/cpuinfo``
    (``""`` where it cannot be read: every flag unknown, ``None``)."""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    flags_line = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    flags = set(flags_line[1].split()) if flags_line else None
    return {
        "cpu_model": model[1].strip() if model else platform.processor() or "unknown",
        "cpu_flags": {f: (f in flags if flags is not None else None) for f in CPU_FLAGS},
    }


def _build_version(pattern: str) -> str:
    """A version from ``torch.__config__.show()`` (``"none"`` when torch was built without it)."""
    found = re.search(pattern, torch.__config__.show())
    return found[1] if found else "none"


def library_versions(device: torch.device) -> dict[str, str]:
    """torch, the CPU kernels it dispatches to, oneDNN, MKL; CUDA, cuDNN and the GPU on a GPU."""
    on_gpu = device.type == "cuda"
    cudnn = torch.backends.cudnn.version() if on_gpu else None
    return {
        "torch": str(torch.__version__),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "onednn": _build_version(r"(?:MKL-DNN|oneDNN) (v[\d.]+)"),
        "mkl": _build_version(r"Math Kernel Library Version ([\d.]+)"),
        "cuda": str(torch.version.cuda) if on_gpu else "none",
        "cudnn": str(cudnn) if cudnn else "none",
        "gpu": torch.cuda.get_device_name(device) if on_gpu else "none",
    }


def runtime_record(
    rule: str, method: str, device: torch.device, bf16: bool, deterministic: bool
) -> dict[str, Any]:
    """What the outputs of ``rule`` for ``method`` depend on, for this process (call it after
    :func:`configure_torch`). ``bf16``: autocast requested; the record says whether it ran."""
    from climai.io.provenance import cpuinfo_text
    from climai.training.loop import bf16_supported

    return {
        "rule": rule,
        "method": method,
        "device": device.type,
        "threads": torch.get_num_threads(),
        "bf16_autocast": bool(bf16 and bf16_supported(device)),
        "deterministic": deterministic,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG", "unset"),
        **library_versions(device),
        "machine": platform.machine(),
        **cpu_features(cpuinfo_text()),
    }


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """``{"cpu_flags": {"amx_bf16": false}}`` → ``{"cpu_flags.amx_bf16": false}``."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in flatten(value).items()})
        else:
            out[key] = value
    return out
