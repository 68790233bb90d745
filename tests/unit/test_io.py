import json
import os
import pickle
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from climai.io import atomic_path, open_store, read_values, write_json, write_store
from climai.io.atomic import Writer, this_writer
from climai.io.checkpoints import load_model_file, save_model
from climai.io.provenance import provenance_attrs
from climai.io.stores import StoreError


def test_atomic_path_leaves_nothing_when_the_write_fails(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("{half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_an_old_store(tmp_path):
    ds = xr.Dataset({"a": (("y", "x"), np.ones((2, 3), np.float32))})
    write_store(ds, tmp_path / "s.zarr")
    write_store(ds * 2, tmp_path / "s.zarr")
    np.testing.assert_array_equal(open_store(tmp_path / "s.zarr")["a"].values, 2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_missing_store_error_names_it(tmp_path):
    with pytest.raises(StoreError, match="nothere.zarr"):
        open_store(tmp_path / "nothere.zarr")


def test_json_is_written_sorted(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": 2})
    assert (tmp_path / "m.json").read_text().index('"a"') < (tmp_path / "m.json").read_text().index(
        '"b"'
    )


def test_json_is_strict_with_null_for_scores_that_could_not_be_computed(tmp_path):
    """A NaN score (e.g. the correlation of a constant field) is ``null``, never Python's bare
    ``NaN`` token, which jq, JavaScript and strict parsers refuse; read_values gives NaN back."""
    import json
    import math

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    data = {"pr": {"corr": math.nan, "rmse": 0.5, "bands": [1.0, -math.inf, math.inf]}}
    write_json(tmp_path / "metrics.json", data)
    strict = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)
    assert strict == {"pr": {"corr": None, "rmse": 0.5, "bands": [1.0, None, None]}}
    back = read_values(tmp_path / "metrics.json")
    assert math.isnan(back["pr"]["corr"]) and back["pr"]["rmse"] == 0.5
    assert back["pr"]["bands"][0] == 1.0 and all(math.isnan(b) for b in back["pr"]["bands"][1:])


def test_model_file_round_trip(tmp_path):
    state = {"w": torch.arange(4.0)}
    save_model(tmp_path / "model.pt", state, {"method": "unet", "stats": {"tas": {"mean": 1.0}}})
    loaded, card = load_model_file(tmp_path / "model.pt")
    assert torch.equal(loaded["w"], state["w"]) and card["method"] == "unet"


class _Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_malicious_model_file_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("model.pt", "wb") as fh:
        pickle.dump({"state_dict": {}, "card": _Evil()}, fh, protocol=2)
    with pytest.raises(ValueError, match="'model.pt' holds a Python object") as err:
        load_model_file("model.pt")
    assert not (tmp_path / "PWNED").exists()
    # one line, and never torch's advice to load with weights_only=False (running the file)
    assert "\n" not in str(err.value) and "weights_only=False" not in str(err.value)
    Path("text.pt").write_text("hello\n")
    with pytest.raises(ValueError, match=r"'text.pt' is not a model file climai wrote \(torch"):
        load_model_file("text.pt")


def test_a_model_file_whose_weights_changed_is_refused_naming_it(tmp_path):
    """torch's zip has no checksum: one bit changed in a model file's weights loaded silently,
    and climai downscale wrote other values with no error (measured: tas up to 2.3e-3 K)."""
    state = {
        "w": torch.full((1024,), 1.5),
        "h": torch.arange(8, dtype=torch.float32).to(torch.bfloat16),
        "n": torch.tensor(3),  # a 0-d tensor, as BatchNorm's counter
    }
    save_model(tmp_path / "model.pt", state, {"method": "unet"})
    loaded, card = load_model_file(tmp_path / "model.pt")
    assert len(card["weights_sha256"]) == 64 and torch.equal(loaded["h"], state["h"])
    data = bytearray((tmp_path / "model.pt").read_bytes())
    at = data.find(np.float32(1.5).tobytes() * 64)
    data[at + 3] ^= 0x01  # an exponent bit of the first weight: 1.5 → 3e38
    (tmp_path / "changed.pt").write_bytes(bytes(data))
    with pytest.raises(ValueError) as err:
        load_model_file(tmp_path / "changed.pt")
    message = str(err.value)
    assert (
        f"model file '{tmp_path / 'changed.pt'}': its weights do not match the checksum" in message
    )
    assert "\n" not in message
    # a model file written before cards recorded the checksum still loads
    torch.save({"state_dict": state, "card": {"method": "unet"}}, tmp_path / "old.pt")
    assert load_model_file(tmp_path / "old.pt")[1] == {"method": "unet"}


@pytest.mark.parametrize("cut", [0, 100, -5000])
def test_a_truncated_model_file_is_named_truncated_in_one_line(tmp_path, cut):
    """A model file cut short (a copy that stopped) was 'not a model file climai wrote', with
    torch's miniz paragraph cut off mid-sentence, or an empty 'EOFError: '."""
    save_model(tmp_path / "model.pt", {"w": torch.ones(4096)}, {"method": "unet"})
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:cut])
    with pytest.raises(ValueError) as err:
        load_model_file(tmp_path / "cut.pt")
    message = str(err.value)
    size = len(data[:cut])
    assert f"'{tmp_path / 'cut.pt'}' is truncated or damaged ({size} bytes;" in message
    assert "\n" not in message and "not a model file climai wrote" not in message
    assert "internal miniz error" not in message


def test_provenance_attrs_name_rule_config_and_version():
    attrs = provenance_attrs("abc", "ingest")
    assert attrs["created_by_rule"] == "ingest" and attrs["config_sha256"] == "abc"
    assert {"climai_version", "git_commit"} <= set(attrs)


# --- concurrent writers (issue 20, item 4) -----------------------------------------------------

_WRITE_IN_ANOTHER_PROCESS = (
    "import sys; from climai.io import write_text; write_text(sys.argv[1], 'second writer')"
)


def test_a_second_writer_of_the_same_output_fails_naming_the_first(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("first writer")
        other = subprocess.run(
            [sys.executable, "-c", _WRITE_IN_ANOTHER_PROCESS, str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert tmp.exists(), "the second writer deleted the first one's live temporary"
    assert other.returncode != 0
    assert f"'{target}' is being written by host {socket.gethostname()}" in other.stderr
    assert f"pid {os.getpid()}, writing since" in other.stderr
    assert target.read_text() == "first writer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(proc.stdout)


# (case, writer identity of the temporary: host, pid, pid start, began, whether it is removed)
STALE = [
    ("owner gone", lambda me: (me.host, _dead_pid(), 1, me.began), True),
    ("owner alive", lambda me: (me.host, me.pid, me.pid_start, me.began - 5), False),
    ("pid reused by another process", lambda me: (me.host, me.pid, me.pid_start + 1, 0), True),
    ("another host, recent", lambda me: ("elsewhere", me.pid, 1, me.began - 60), False),
    ("another host, 2 days old", lambda me: ("elsewhere", 1, 1, me.began - 2 * 86400), True),
]


@pytest.mark.parametrize(("case", "owner", "removed"), STALE, ids=[s[0] for s in STALE])
def test_only_temporaries_of_dead_or_old_writers_are_removed(tmp_path, case, owner, removed):
    me = this_writer()
    tag = Writer(*owner(me)).tag()
    other = tmp_path / f".s.zarr.tmp-{tag}"
    other.mkdir()
    (other / "zarr.json").write_text("{}")
    write_store(xr.Dataset({"a": ("x", np.arange(3.0))}), tmp_path / "s.zarr")
    assert other.exists() is not removed, case
    assert (tmp_path / "s.zarr" / "zarr.json").is_file()


def test_every_file_and_folder_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_store(xr.Dataset({"a": ("x", np.arange(3.0))}), tmp_path / "s.zarr")
    store = tmp_path / "s.zarr"
    names = {p.relative_to(store).as_posix() for p in [store, *store.rglob("*")]}
    tmp_names = {Path(s).name for s in synced if ".tmp-" in s}
    assert tmp_names and all(".s.zarr.tmp-" in s for s in synced[:-1]), synced
    assert {Path(n).name for n in names - {"."}} <= {Path(s).name for s in synced}
    assert synced[-1] == str(tmp_path), "the folder holding the new name is fsynced last"


def test_an_old_store_is_replaced_with_no_moment_without_it(tmp_path):
    target = tmp_path / "s.zarr"
    ds = xr.Dataset({"a": (("t", "x"), np.ones((40, 50)))}).chunk({"t": 1})
    write_store(ds, target)
    missing = threading.Event()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if not (target / "zarr.json").exists():
                missing.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for k in range(5):
            write_store(ds * k, target)
    finally:
        done.set()
        watcher.join()
    assert not missing.is_set(), "readers saw no store while it was replaced"
    np.testing.assert_array_equal(open_store(target)["a"].values, 4.0)


def test_a_folder_that_is_not_a_store_is_never_replaced(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"'.*out' is a folder but not a zarr store"):
        write_store(xr.Dataset({"a": ("x", np.arange(3.0))}), tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_settings_files_change_only_with_the_settings_that_change_outputs(tmp_path):
    """A stage's settings file (an input of its rule) is rewritten, and so newer than the
    outputs, exactly when its settings change: not for the output location or a RUN_KEY, never
    in a dry run; a new one is dated 1970 so that existing outputs are trusted as before."""
    from climai.config import config_sha256, load_config, stage_slice
    from climai.io.settings import refresh_settings, settings_text
    from climai.testing import write_config

    def text(**overrides):
        cfg = load_config(write_config(tmp_path / "c.yaml", **overrides))
        return settings_text(stage_slice(cfg, "train", "unet"))

    base = text()
    path = tmp_path / "settings" / "train_unet.json"
    assert refresh_settings(path, base, write=False) == "new" and not path.exists()  # dry run
    assert refresh_settings(path, base) == "new" and path.stat().st_mtime == 0
    record = json.loads(path.read_text())
    cfg = load_config(tmp_path / "c.yaml")
    assert record["config_sha256"] == config_sha256(stage_slice(cfg, "train", "unet"))
    assert record["config"]["methods"]["unet"]["epochs"] == 1 and "results" not in record["config"]
    assert text(results=str(tmp_path / "elsewhere")) == base  # the output location
    assert text(methods={"unet": {"checkpoint_every": 3, "workers": 1}}) == base  # RUN_KEYS
    assert refresh_settings(path, base) == "same" and path.stat().st_mtime == 0
    changed = text(methods={"unet": {"epochs": 2}})
    assert changed != base
    assert refresh_settings(path, changed, write=False) == "changed"  # a dry run
    assert path.read_text() == base and path.stat().st_mtime == 0
    assert refresh_settings(path, changed) == "changed"
    assert path.read_text() == changed and path.stat().st_mtime > 1e9
    assert refresh_settings(path, changed) == "same"


def test_only_inspects_knows_the_snakemake_options_that_run_no_job():
    from climai.io.settings import only_inspects

    for argv in (["--summary"], ["-S"], ["--dag=pdf"], ["--list-changes", "params"], ["--lint"]):
        assert only_inspects(["snakemake", "--cores", "2", *argv]), argv
    for argv in (["--cores", "2"], ["--touch"], ["--report-after-run"], ["--forcerun", "train"]):
        assert not only_inspects(["snakemake", *argv]), argv
