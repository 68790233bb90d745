"""The prepared dataset (``prep/dataset.zarr``) read and written through one object.

``preprocess`` writes ``hr_<var>`` on ``(time, y, x)``, ``lr_<var>`` on ``(time, y_lr, x_lr)``,
``static_<name>`` on ``(y, x)``, a ``split`` code per time step (an index into
:data:`~climai.preprocess.splits.SPLITS`, -1 for unused steps), the ``crs`` and attrs such as
``scale``. The key functions here are the only spelling of that layout; every other module asks
:class:`PreparedDataset` for a variable, a static field or a split.

Examples
--------
>>> ds = xr.Dataset(
...     {hr_key("tas"): (("time", "y", "x"), np.zeros((4, 4, 4), np.float32), {"units": "K"}),
...      lr_key("tas"): (("time", "y_lr", "x_lr"), np.zeros((4, 2, 2), np.float32)),
...      "split": ("time", np.array([0, 0, 1, 2], np.int8))},
...     coords={"y": np.arange(4.0), "x": np.arange(4.0)}, attrs={"scale": 2})
>>> prep = PreparedDataset(ds)
>>> prep.variables, prep.split_steps("train"), prep.split("test").sizes["time"]
(['tas'], slice(0, 2, None), 1)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from climai.io.cf import cf_attrs
from climai.preprocess.splits import SPLITS


def hr_key(var: str) -> str:
    """The store name of variable ``var`` on the HR grid: ``hr_<var>``."""
    return f"hr_{var}"


def lr_key(var: str) -> str:
    """The store name of variable ``var`` on the LR grid: ``lr_<var>``."""
    return f"lr_{var}"


def static_key(name: str) -> str:
    """The store name of static field ``name``: ``static_<name>``."""
    return f"static_{name}"


HR_PREFIX, LR_PREFIX, STATIC_PREFIX = hr_key(""), lr_key(""), static_key("")

GRID_STATIC = "grid_log2_km"
"""A static field every prepared dataset has without storing it: log2 of the HR grid spacing in
km (0 at 1 km, -2 at 250 m), constant over the domain; the grid channel of pooled models."""

KM_PER_DEGREE = 111.195  # mean Earth radius 6371.0 km × π / 180


def grid_spacing_km(ds: xr.Dataset) -> float:
    """The HR grid spacing of ``ds`` in km: the geometric mean of the x and y spacings, read from
    the coordinates' units (m, km, or degrees: x scaled by the cosine of the mean latitude)."""
    spacing = []
    for axis in ("x", "y"):
        coord = ds[axis]
        if coord.size < 2:
            raise ValueError(f"coordinate {axis!r} has {coord.size} value(s): no grid spacing")
        step = abs(float(coord[1] - coord[0]))
        units = str(coord.attrs.get("units", "m"))
        if units in ("m", "metre", "meter", "metres", "meters"):
            step /= 1000.0
        elif units.startswith("degree"):
            step *= KM_PER_DEGREE
            if axis == "x":
                step *= float(np.cos(np.deg2rad(np.mean(ds["y"].values))))
        elif units != "km":
            raise ValueError(f"coordinate {axis!r} has units {units!r}; expected m, km or degrees")
        spacing.append(step)
    return float(np.sqrt(spacing[0] * spacing[1]))


def grid_static(ds: xr.Dataset) -> xr.DataArray:
    """:data:`GRID_STATIC` on ``ds``'s HR grid."""
    value = np.float32(np.log2(grid_spacing_km(ds)))
    shape = (ds.sizes["y"], ds.sizes["x"])
    return xr.DataArray(
        np.full(shape, value, np.float32),
        dims=("y", "x"),
        coords={"y": ds["y"], "x": ds["x"]},
        name=static_key(GRID_STATIC),
        attrs={"units": "1", "long_name": "log2 of the HR grid spacing in km"},
    )


def split_code(name: str) -> int:
    """The ``split`` label of the split ``name`` (its index in ``SPLITS``)."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; the splits are {list(SPLITS)}")
    return SPLITS.index(name)


def static_names(ds: xr.Dataset) -> list[str]:
    """The names of the static fields of ``ds`` (its ``static_<name>`` variables), sorted."""
    return sorted(
        str(v).removeprefix(STATIC_PREFIX) for v in ds.data_vars if str(v).startswith(STATIC_PREFIX)
    )


def block_centres(coord: xr.DataArray, scale: int) -> np.ndarray:
    """The LR coordinate of an HR axis: the mean of each run of ``scale`` HR cell centres."""
    return coord.values.reshape(-1, scale).mean(axis=1)


def stack_into(arrays: list[xr.DataArray]) -> np.ndarray:
    """``arrays`` (same shape) stacked on a new axis 1, each read chunk by chunk straight into
    its slot of the result: the store's chunks are never concatenated into an array of their
    own first, which ``np.stack([a.values ...])`` does (reading FMI's train split peaked at 2.6×
    its arrays that way, 1.85× this way; MRMS's 2.4 GB one at 2.0× and 1.05×:
    ``benchmarks/stack_memory.py``)."""
    first = arrays[0]
    dtype = np.result_type(*(a.dtype for a in arrays))
    out = np.empty((first.shape[0], len(arrays), *first.shape[1:]), dtype)
    for i, a in enumerate(arrays):
        if a.chunks is None:  # in memory (or a backend array, read whole)
            out[:, i] = a.values
        else:  # dask: each chunk is computed and written into its region of out
            import dask.array

            dask.array.store(a.data, out[:, i], lock=False)
    return out


class PreparedDataset:
    """A lazy view of the prepared dataset ``ds`` (as :func:`climai.io.open_store` opens it).

    Selections return new views; arrays stay dask-backed until a caller asks for ``.values`` or a
    stack (:meth:`hr_stack`, :meth:`lr_stack`, :meth:`static_stack`).
    """

    def __init__(self, ds: xr.Dataset) -> None:
        self.ds = ds

    def __repr__(self) -> str:
        return (
            f"PreparedDataset(variables={self.variables}, statics={self.statics}, "
            f"time={self.ds.sizes.get('time', 0)})"
        )

    @property
    def variables(self) -> list[str]:
        """The downscaled variables (those with an ``hr_<var>``), in store order."""
        return [
            str(v).removeprefix(HR_PREFIX)
            for v in self.ds.data_vars
            if str(v).startswith(HR_PREFIX)
        ]

    @property
    def statics(self) -> list[str]:
        """The static fields' names, sorted (the order of the model's static channels)."""
        return static_names(self.ds)

    @property
    def scale(self) -> int:
        """HR cells per LR cell, per axis (the store's ``scale`` attribute)."""
        if "scale" not in self.ds.attrs:
            raise KeyError("the prepared dataset has no 'scale' attribute (written by preprocess)")
        return int(self.ds.attrs["scale"])

    @property
    def sizes(self) -> Any:
        """The dimension sizes of the underlying dataset."""
        return self.ds.sizes

    @property
    def times(self) -> np.ndarray:
        """The time coordinate's values."""
        return self.ds["time"].values

    def _get(self, key: str, kind: str, name: str, valid: list[str]) -> xr.DataArray:
        if key not in self.ds.data_vars:
            raise KeyError(
                f"the prepared dataset has no {kind} {name!r} ({key}); it has {valid or 'none'}"
            )
        return self.ds[key]

    def hr(self, var: str) -> xr.DataArray:
        """``hr_<var>`` on ``(time, y, x)``."""
        return self._get(hr_key(var), "variable", var, self.variables)

    def lr(self, var: str) -> xr.DataArray:
        """``lr_<var>`` on ``(time, y_lr, x_lr)``."""
        return self._get(lr_key(var), "LR variable", var, self.variables)

    def static(self, name: str) -> xr.DataArray:
        """``static_<name>`` on ``(y, x)`` (:data:`GRID_STATIC` derived when not stored)."""
        if name == GRID_STATIC and static_key(name) not in self.ds.data_vars:
            return grid_static(self.ds)
        return self._get(static_key(name), "static field", name, self.statics)

    def cf_attrs(self, var: str) -> dict[str, Any]:
        """The CF attributes (:data:`~climai.io.cf.CF_KEYS`) of ``hr_<var>`` that it has."""
        return cf_attrs(self.hr(var).attrs)

    def split_mask(self, name: str) -> np.ndarray:
        """Boolean per time step: whether it belongs to split ``name``."""
        return np.asarray(self.ds["split"].values == split_code(name))

    def split_size(self, name: str) -> int:
        """The number of time steps of split ``name``."""
        return int(self.split_mask(name).sum())

    def split_steps(self, name: str) -> slice | np.ndarray:
        """The time indices of split ``name``: a slice when contiguous (splits are in time order).

        A slice keeps the store's chunks; dask's take of an index array merges them into one, so
        every reader (a rank of ``infer``, say) would read the whole split to get its share.
        """
        idx = np.flatnonzero(self.split_mask(name))
        if idx.size and np.all(np.diff(idx) == 1):
            return slice(int(idx[0]), int(idx[-1]) + 1)
        return idx

    def split(self, name: str) -> PreparedDataset:
        """The time steps of split ``name`` (static fields and coordinates unchanged)."""
        return PreparedDataset(self.ds.isel(time=self.split_steps(name)))

    def isel(self, **indexers: Any) -> PreparedDataset:
        """A view indexed like :meth:`xarray.Dataset.isel`."""
        return PreparedDataset(self.ds.isel(**indexers))

    def hr_stack(self, variables: list[str]) -> np.ndarray:
        """``(time, variable, y, x)``: the HR fields of ``variables``, read into memory."""
        return stack_into([self.hr(v) for v in variables])

    def lr_stack(self, variables: list[str]) -> np.ndarray:
        """``(time, variable, y_lr, x_lr)``: the LR fields of ``variables``, read into memory."""
        return stack_into([self.lr(v) for v in variables])

    def static_stack(self, names: list[str]) -> np.ndarray:
        """``(static, y, x)``: the static fields ``names``, read into memory."""
        if not names:
            return np.zeros((0, self.ds.sizes["y"], self.ds.sizes["x"]), np.float32)
        return np.stack([self.static(s).values for s in names])

    def statics_dataset(self, names: list[str]) -> xr.Dataset:
        """The static fields ``names`` as ``<name>`` on ``(y, x)`` (lazy; the store's attrs kept)."""
        stored = [s for s in names if static_key(s) in self.ds.data_vars]
        out = self.ds[[static_key(s) for s in stored]].rename({static_key(s): s for s in stored})
        for s in names:
            if s not in stored:  # derived (GRID_STATIC), or a KeyError naming the field
                out[s] = self.static(s).rename(s)
        return out[names]

    def lr_dataset(self, variables: list[str]) -> xr.Dataset:
        """The LR fields as ``<var>`` on ``(time, y, x)``, the form ``climai downscale`` reads.

        Each carries the CF attributes of its HR variable; ``y``/``x`` are the block centres of
        the HR coordinates (with their attributes); the ``crs`` comes along when there is one.
        """
        lr = xr.Dataset(
            {
                v: self.lr(v).rename({"y_lr": "y", "x_lr": "x"}).assign_attrs(self.cf_attrs(v))
                for v in variables
            }
        )
        ds, scale = self.ds, self.scale
        lr = lr.assign_coords(
            y=("y", block_centres(ds["y"], scale), ds["y"].attrs),
            x=("x", block_centres(ds["x"], scale), ds["x"].attrs),
        )
        if "crs" in ds:
            lr["crs"] = ds["crs"]
        return lr
