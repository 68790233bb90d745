"""Model files: weights plus a model card, saved atomically, loaded with ``weights_only=True``."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from climai.io.atomic import atomic_path


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_model(path: str | Path, state_dict: dict[str, torch.Tensor], card: dict[str, Any]) -> None:
    """Save weights and card (plain JSON-like data) to ``path`` atomically; the card records
    the weights' :func:`weights_sha256`, which loading checks (torch's zip has no checksum)."""
    card = {**card, "weights_sha256": weights_sha256(state_dict)}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state_dict, "card": card}, tmp)


def load_model_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, card)`` from a model file; never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, KeyError...
        raise ValueError(f"model file {str(path)!r} {_unloadable(err, path)}") from err
    if not isinstance(obj, dict) or "state_dict" not in obj or "card" not in obj:
        raise ValueError(f"model file {str(path)!r} has no 'state_dict' and 'card'")
    want = obj["card"].get("weights_sha256") if isinstance(obj["card"], dict) else None
    if want is not None and weights_sha256(obj["state_dict"]) != want:
        raise ValueError(
            f"model file {str(path)!r}: its weights do not match the checksum its card records "
            f"(weights_sha256 {str(want)[:12]}…): the file was changed or damaged after it was "
            "written; copy it again from the model file training wrote"
        )
    return obj["state_dict"], obj["card"]


#: The model card's fields that applying the model reads (``climai downscale``, ``infer``):
#: normalisation, architecture, constraint, members and calibration, units, grid, variables.
APPLIED_CARD_KEYS = (
    "method", "architecture", "features", "variables", "units", "static_units", "grid",
    "config_sha256",
)  # fmt: skip


def applied_card(card: dict[str, Any]) -> dict[str, Any]:
    """The part of a model card that decides what the model computes when applied: the
    :data:`APPLIED_CARD_KEYS`, the config it was trained with (less ``results``, where it was
    written) and the seed its ensembles draw from; not its provenance, runtime or scores. A
    model file's checksum covers it beside the weights (:func:`climai.manifest.artifact_checksum`),
    so that an edited card is not "the same model"."""
    config = {k: v for k, v in (card.get("config") or {}).items() if k != "results"}
    seed = (card.get("provenance") or {}).get("seed")
    return {**{k: card.get(k) for k in APPLIED_CARD_KEYS}, "config": config, "seed": seed}


def card_numbers(card: dict[str, Any]) -> tuple[list[float], str]:
    """The floats of :func:`applied_card` (in a fixed order) and the rest of it as canonical
    JSON with each float as 0.0: two cards whose rests are equal differ only by those numbers
    (e.g. an ensemble's calibrated inflation, trained on another machine)."""
    numbers: list[float] = []

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            return {str(k): walk(x[k]) for k in sorted(x, key=str)}
        if isinstance(x, list | tuple):
            return [walk(v) for v in x]
        if isinstance(x, float):
            numbers.append(x)
            return 0.0
        return x

    rest = json.dumps(walk(applied_card(card)), sort_keys=True, default=str)
    return numbers, rest


def _cut_zip(path: Path) -> bool:
    """Whether ``path`` begins as a zip archive (torch's format) but does not end as one."""
    try:
        with path.open("rb") as fh:
            return fh.read(4) == b"PK\x03\x04" and not zipfile.is_zipfile(path)
    except OSError:
        return False


def _unloadable(err: Exception, path: Path) -> str:
    """Why torch could not load a file, in one line. Torch's own message for a pickle it refuses
    runs to a paragraph and suggests ``weights_only=False`` (running the file's code), which
    climai never does; a file that is not a torch file at all gives a bare ``KeyError``; a torch
    file cut short or damaged (a copy that stopped) a paragraph on miniz, or an empty
    ``EOFError``."""
    text = str(err)
    damaged = re.search(r"PytorchStreamReader failed (.+?)(?:\. This is an internal|$)", text)
    if damaged or isinstance(err, EOFError) or _cut_zip(path):
        what = f"reading failed: {damaged[1]}" if damaged else "its zip archive is incomplete"
        return (
            f"is truncated or damaged ({path.stat().st_size} bytes; {what}): copy it again from "
            "the model file training wrote (models/<method>/model.pt)"
        )
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return (
            f"holds a Python object ({found.group(1)}), not only tensors and plain data: climai "
            "loads weights only (torch.load(weights_only=True)) and never runs a file's code; "
            "save the model with climai (climai.io.checkpoints.save_model)"
        )
    refused = re.search(
        r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", text, re.S
    )
    if refused:  # a pickle of code, or no pickle at all (a text file reads as unknown opcodes)
        return (
            "is not a model file climai wrote: torch's weights-only loader refuses it "
            f"({' '.join(refused.group(1).split())}); climai never runs a file's code"
        )
    first = (text.strip().splitlines() or [""])[0][:200]
    return f"is not a model file climai wrote (torch.load: {type(err).__name__}: {first})"
