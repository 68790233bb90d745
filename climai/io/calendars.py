"""Model calendars: the ones climai runs on, read as datetime64 and written back as they came.

Inside climai times are ``datetime64[ns]`` (pandas, numpy, the splits, the time features). A
calendar whose every date is a Gregorian date (``standard``, ``gregorian``,
``proleptic_gregorian``, ``noleap``/``365_day``: a noleap year is a Gregorian year without
29 February) is read as such and its name kept in the ``time`` attribute
:data:`SOURCE_CALENDAR`; every store and NetCDF file climai writes encodes ``time`` in it again,
so that ``xr.open_dataset``/``xr.open_zarr`` read back the input's dates and calendar. Calendars
with dates that Gregorian time lacks (``360_day``: 30 February; ``all_leap``/``366_day``:
29 February of every year; ``julian``) are refused, naming the file and the calendar.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

#: Calendars whose every date is a Gregorian date (CF names, lower case).
ACCEPTED = ("standard", "gregorian", "proleptic_gregorian", "noleap", "365_day")
#: Attribute of ``time`` naming the calendar of the data's source (absent: proleptic_gregorian).
SOURCE_CALENDAR = "source_calendar"
#: Attribute of ``time``: the source's time ``units`` (e.g. ``days since 1949-12-01``), which
#: every output encodes its times in again.
SOURCE_UNITS = "source_time_units"
#: The attributes of ``time`` that every output keeps (the source's calendar and time units).
SOURCE_TIME = (SOURCE_CALENDAR, SOURCE_UNITS)


class CalendarError(ValueError):
    """A time axis on a calendar climai cannot run on; the message names file and calendar."""


def _calendar(var: xr.Variable) -> str | None:
    """The calendar of a variable of cftime dates (None: not cftime dates); only its first
    element is read (a lazy variable stays lazy)."""
    if var.dtype != object or var.size == 0:
        return None
    first = np.asarray(var[(0,) * var.ndim].values).item()
    calendar = getattr(first, "calendar", None)
    return str(calendar).lower() if calendar else None


def refuse(calendar: str, where: str) -> CalendarError:
    """The error for a calendar outside :data:`ACCEPTED`, naming ``where`` (file and key)."""
    return CalendarError(
        f"{where}: the time axis uses the {calendar!r} calendar, whose dates include some that "
        f"Gregorian time lacks (360_day: 30 February; all_leap/366_day: 29 February of every "
        f"year); climai runs on the calendars {', '.join(ACCEPTED)}: convert the files first, "
        "e.g. xarray's ds.convert_calendar('noleap', align_on='year') for 360_day"
    )


def _source(var: xr.Variable, calendar: str) -> dict[str, str]:
    """The :data:`SOURCE_CALENDAR` and :data:`SOURCE_UNITS` attributes of a decoded time."""
    units = var.encoding.get("units")
    return {SOURCE_CALENDAR: calendar, **({SOURCE_UNITS: str(units)} if units else {})}


def to_datetime64(ds: xr.Dataset, where: str, record: bool = True) -> xr.Dataset:
    """``ds`` with its cftime dates (the time coordinate, its bounds) as ``datetime64[ns]`` and the
    calendar in each such variable's :data:`SOURCE_CALENDAR` attribute; with ``record`` (a source
    file), a time decoded to datetime64 keeps its encoded calendar there too. :class:`CalendarError`
    naming ``where`` for a calendar outside :data:`ACCEPTED`."""
    out: dict[str, Any] = {}
    for name, var in ds.variables.items():
        calendar = _calendar(var)
        if calendar is None:
            encoded = var.encoding.get("calendar") if record else None
            if (
                encoded
                and np.issubdtype(var.dtype, np.datetime64)
                and SOURCE_CALENDAR not in var.attrs
            ):
                out[str(name)] = var.copy(deep=False)
                out[str(name)].attrs.update(_source(var, str(encoded).lower()))
            continue
        calendar = str(var.encoding.get("calendar") or calendar).lower()  # 365_day, not noleap
        if calendar not in ACCEPTED:
            raise refuse(calendar, where)
        flat = np.asarray(var.values).ravel()
        index = xr.CFTimeIndex(flat).to_datetimeindex(unsafe=True, time_unit="ns")
        values = np.asarray(index.values).reshape(var.shape)
        attrs = {**var.attrs, **(_source(var, calendar) if record else {SOURCE_CALENDAR: calendar})}
        out[str(name)] = xr.Variable(var.dims, values, attrs)
        # what else decoding moved out of the attributes (CF ``bounds``, chunks) stays
        out[str(name)].encoding = {
            k: v for k, v in var.encoding.items() if k not in ("units", "calendar", "dtype")
        }
    if not out:
        return ds
    coords = {k: v for k, v in out.items() if k in ds.coords}
    data = {k: v for k, v in out.items() if k not in ds.coords}
    return ds.assign_coords(coords).assign(data)


def calendar_of(ds: xr.Dataset) -> str:
    """The calendar ``ds``'s ``time`` is to be written in (default proleptic_gregorian)."""
    if "time" not in ds.variables:
        return "proleptic_gregorian"
    return str(ds["time"].attrs.get(SOURCE_CALENDAR, "proleptic_gregorian"))


def time_encodings(ds: xr.Dataset) -> dict[str, dict[str, str]]:
    """The ``calendar`` (and ``units``) encoding of every datetime64 variable of ``ds``: ``time``'s
    :data:`SOURCE_CALENDAR` and :data:`SOURCE_UNITS` (a store or file then reads back in the
    source's calendar and units)."""
    calendar = calendar_of(ds)
    units = ds["time"].attrs.get(SOURCE_UNITS) if "time" in ds.variables else None
    enc = {"calendar": calendar, **({"units": str(units), "dtype": "float64"} if units else {})}
    return {
        str(n): dict(enc) for n, v in ds.variables.items() if np.issubdtype(v.dtype, np.datetime64)
    }


_NOLEAP = ("noleap", "365_day")
_MICROSECONDS = "microseconds since 1970-01-01"


def _model_microseconds(values: np.ndarray, calendar: str) -> np.ndarray:
    """Microseconds since 1970 counted in ``calendar`` of the dates ``values`` (datetime64)."""
    import cftime
    import pandas as pd

    a = np.asarray(values, dtype="datetime64[ns]")
    dates = pd.DatetimeIndex(a.ravel()).to_pydatetime()
    return np.asarray(cftime.date2num(dates, _MICROSECONDS, calendar), np.float64).reshape(a.shape)


def seconds_between(start: Any, end: Any, calendar: str | None) -> np.ndarray:
    """``end - start`` in seconds as ``calendar`` counts them (datetime64 arrays): in a noleap
    calendar 28 February 12:00 to 1 March 00:00 is 12 hours, also in a leap year."""
    s, e = np.asarray(start, "datetime64[ns]"), np.asarray(end, "datetime64[ns]")
    if calendar not in _NOLEAP:
        return (e - s) / np.timedelta64(1, "s")
    return (_model_microseconds(e, calendar) - _model_microseconds(s, calendar)) / 1e6


def shifted(values: Any, seconds: float, calendar: str | None) -> np.ndarray:
    """The datetime64 dates ``values`` moved by ``seconds`` as ``calendar`` counts them (a noleap
    28 February 12:00 + 12 h is 1 March 00:00, never 29 February)."""
    import cftime

    a = np.asarray(values, dtype="datetime64[ns]")
    if calendar not in _NOLEAP:
        return a + np.timedelta64(round(seconds * 1e9), "ns")
    num = np.round(_model_microseconds(a, calendar) + seconds * 1e6).astype(np.int64)
    dates = cftime.num2date(num.ravel(), _MICROSECONDS, calendar)
    index = xr.CFTimeIndex(dates).to_datetimeindex(unsafe=True, time_unit="ns")
    return np.asarray(index.values).reshape(a.shape)
