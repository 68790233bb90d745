"""climai.units against pint's own values: a table of conversions, water equivalence, errors."""

from __future__ import annotations

import numpy as np
import pint
import pytest
import xarray as xr

from climai.units import (
    UnitsError,
    affine,
    amount_to_rate,
    convert,
    is_amount,
    is_rate,
    lookup,
)

# A registry of pint's own, without cf-xarray's preprocessing or climai's water context: the
# reference values. Each row: climai's (CF) spelling of both units, then pint's default spelling.
PINT = pint.UnitRegistry()
RHO_WATER = PINT.Quantity(1000.0, "kg/m**3")
VALUES = np.array([-12.5, 0.0, 0.37, 1.0, 273.15, 1013.25], dtype=np.float64)

CONVERSIONS = [
    ("K", "degC", "kelvin", "degC"),
    ("degC", "K", "degC", "kelvin"),
    ("degF", "degC", "degF", "degC"),
    ("celsius", "K", "degC", "kelvin"),
    ("mm h-1", "mm s-1", "mm/hour", "mm/s"),
    ("mm d-1", "mm h-1", "mm/day", "mm/hour"),
    ("mm s-1", "mm d-1", "mm/s", "mm/day"),
    ("mm/day", "mm h-1", "mm/day", "mm/hour"),
    ("m s-1", "km h-1", "m/s", "km/hour"),
    ("km h-1", "m s-1", "km/hour", "m/s"),
    ("knot", "m s-1", "knot", "m/s"),
    ("Pa", "hPa", "Pa", "hPa"),
    ("hPa", "Pa", "hPa", "Pa"),
    ("kPa", "hPa", "kPa", "hPa"),
    ("W m-2", "kW m-2", "W/m**2", "kW/m**2"),
    ("W m-2", "J m-2 h-1", "W/m**2", "J/m**2/hour"),
    ("J m-2", "MJ m-2", "J/m**2", "MJ/m**2"),
    ("%", "1", "percent", "dimensionless"),
    ("1", "%", "dimensionless", "percent"),
    ("g kg-1", "kg kg-1", "g/kg", "kg/kg"),
    ("km", "m", "km", "m"),
    ("m", "mm", "m", "mm"),
    ("kg m-2 s-1", "g m-2 s-1", "kg/m**2/s", "g/m**2/s"),
    ("m2 s-2", "J kg-1", "m**2/s**2", "J/kg"),
]
# Liquid water equivalence: pint's value of the same quantity times or over the water density.
WATER = [
    ("kg m-2 s-1", "mm h-1", "kg/m**2/s", "mm/hour", -1),
    ("kg m-2 s-1", "mm s-1", "kg/m**2/s", "mm/s", -1),
    ("mm h-1", "kg m-2 s-1", "mm/hour", "kg/m**2/s", 1),
    ("kg m-2 d-1", "mm h-1", "kg/m**2/day", "mm/hour", -1),
    ("m s-1 lwe", "kg m-2 h-1", "m/s", "kg/m**2/hour", 1),
    ("kg m-2", "mm", "kg/m**2", "mm", -1),
    ("mm", "kg m-2", "mm", "kg/m**2", 1),
    ("m lwe", "kg m-2", "m", "kg/m**2", 1),
]


def pint_value(src: str, dst: str, values: np.ndarray, density_power: int = 0) -> np.ndarray:
    q = PINT.Quantity(values, src)
    return (q * RHO_WATER**density_power if density_power else q).to(dst).magnitude


@pytest.mark.parametrize(("src", "dst", "pint_src", "pint_dst"), CONVERSIONS)
def test_conversions_agree_with_pint(src, dst, pint_src, pint_dst):
    da = xr.DataArray(VALUES, attrs={"units": src, "long_name": "kept"})
    out = convert(da, dst, "v")
    np.testing.assert_allclose(out.values, pint_value(pint_src, pint_dst, VALUES), rtol=1e-6)
    assert out.attrs == {"units": dst, "long_name": "kept"}


@pytest.mark.parametrize(("src", "dst", "pint_src", "pint_dst", "power"), WATER)
def test_water_equivalence_agrees_with_pint_and_the_density(src, dst, pint_src, pint_dst, power):
    factor, offset = affine(src, dst, "pr")
    expected = pint_value(pint_src, pint_dst, VALUES, power)
    np.testing.assert_allclose(factor * VALUES + offset, expected, rtol=1e-12)


def test_the_table_has_at_least_twenty_conversions():
    assert len(CONVERSIONS) + len(WATER) >= 20


@pytest.mark.parametrize(
    ("src", "dst"), [("K", "K"), ("mm h-1", "mm/h"), ("kg m-2 s-1", "mm s-1"), ("dBZ", "dBZ")]
)
def test_equal_units_leave_the_values_untouched(src, dst):
    """The toy campaign's fields are in their canonical units: no arithmetic, bitwise equal."""
    da = xr.DataArray(np.array([0.1, 287.3], dtype=np.float32), attrs={"units": src})
    out = convert(da, dst, "v")
    assert out.dtype == np.float32 and out.attrs["units"] == dst
    np.testing.assert_array_equal(out.values, da.values)


def test_float32_temperatures_convert_as_before():
    da = xr.DataArray(np.array([273.15, 300.0, -5.25], dtype=np.float32), attrs={"units": "degC"})
    out = convert(da, "K", "tas")
    np.testing.assert_array_equal(out.values, da.values + np.float32(273.15))
    assert out.dtype == np.float32


def test_accumulations_become_rates_by_step_length():
    for units, per_step in (("mm", 3.6), ("kg m-2", 3.6), ("m", 0.0036)):
        da = xr.DataArray(np.array([per_step, 0.0]), attrs={"units": units})
        rate = amount_to_rate(da, 3600.0, "tp")
        np.testing.assert_allclose(convert(rate, "mm h-1", "tp").values, [3.6, 0.0], rtol=1e-6)
        assert rate.attrs["units"] == "mm s-1"


@pytest.mark.parametrize(
    ("units", "amount", "rate"),
    [("mm", True, False), ("kg m-2", True, False), ("m", True, False), ("mm h-1", False, True),
     ("kg m-2 s-1", False, True), ("m s-1", False, True), ("K", False, False),
     ("Pa", False, False), ("bananas", False, False), ("dBZ", False, False)],
)  # fmt: skip
def test_amounts_and_rates(units, amount, rate):
    assert (is_amount(units), is_rate(units)) == (amount, rate)


def test_lookup_gives_the_si_factor_and_dimension_of_coordinates():
    assert lookup("km", "x").dimension == "length" and lookup("km", "x").factor == 1000.0
    assert lookup("degC", "tas").offset == 273.15
    assert lookup("hPa", "ps").dimension == "pressure"
    assert lookup("dBZ", "dbz").dimension == "reflectivity"


@pytest.mark.parametrize(
    ("src", "dst", "message"),
    [
        ("K", "mm h-1", r"variable 'v' in f\.nc: cannot convert 'K' \(temperature\) to 'mm h-1' "
         r"\(length per time\)"),
        ("m s-1", "Pa", r"cannot convert 'm s-1' \(length per time\) to 'Pa' \(pressure\)"),
        ("bananas", "K", r"variable 'v' in f\.nc: unknown units 'bananas'; known units"),
        ("", "K", r"unknown units ''"),
        ("10 m", "m", r"unknown units '10 m'"),
        ("dBZ", "mm h-1", r"cannot convert 'dBZ' \(reflectivity\).*only a converter"),
    ],
)  # fmt: skip
def test_errors_name_the_variable_and_both_units(src, dst, message):
    with pytest.raises(UnitsError, match=message):
        convert(xr.DataArray([1.0], attrs={"units": src}), dst, "v", " in f.nc")


def test_unknown_target_units_name_the_config():
    with pytest.raises(UnitsError, match=r"variable 'v' \(config 'variables'\): unknown units"):
        convert(xr.DataArray([1.0], attrs={"units": "K"}), "bananas per fortnight", "v")


def test_conversion_is_lazy_for_dask_arrays():
    da = xr.DataArray(np.ones((4, 4)), attrs={"units": "hPa"}).chunk(2)
    out = convert(da, "Pa", "ps")
    assert out.chunks is not None
    np.testing.assert_allclose(out.values, 100.0)


@pytest.mark.parametrize(
    "spelling",
    ["degC", "degree_C", "degrees_C", "degree_Celsius", "degrees C", "deg C", "Degrees Celsius"],
)
def test_celsius_spellings_convert_to_kelvin_by_value(spelling):
    """'degrees C' and 'deg C' were read as angle × temperature difference: 20 became 0.349 K
    with no error; 'degree_C' and 'degrees_C' (UDUNITS spellings) were unknown units."""
    da = xr.DataArray(np.array([20.0, -5.0]), attrs={"units": spelling})
    np.testing.assert_allclose(convert(da, "K", "tas").values, [293.15, 268.15], rtol=1e-6)


@pytest.mark.parametrize("spelling", ["degrees m-1", "degree K", "radian mm h-1"])
def test_a_plane_angle_in_a_product_is_refused_not_scaled(spelling):
    with pytest.raises(UnitsError, match=f"unknown units '{spelling}'"):
        lookup(spelling, "v")


def test_a_cmip_name_with_units_of_another_quantity_stops_before_any_job():
    """sfcWind is exported as CF wind_speed: in K it would be a wind speed in kelvin, no error."""
    from climai.config import ConfigError, validate_config
    from climai.io.headers import check_before_jobs

    def check(units: str) -> None:
        raw = {"variables": [{"name": "sfcWind", "units": units}]}
        check_before_jobs(validate_config(raw), files=False)

    check("m s-1")
    check("km h-1")  # any units of a speed convert
    with pytest.raises(
        ConfigError,
        match=r"config key 'variables.0.units' = 'K': 'sfcWind' is the CMIP short name of "
        r"'wind_speed' .* convertible to 'm s-1' .*cannot convert 'K' \(temperature\)",
    ):
        check("K")


def test_building_the_registry_logs_no_pint_redefinition_warnings():
    """cf-xarray's registry redefines %, year, C...: 11 'WARNING pint.util: Redefining' lines
    were in every ingest log and `climai validate` output, saying nothing about the data."""
    import subprocess
    import sys

    code = (
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "from climai.units import affine\n"
        "print(affine('knot', 'm s-1', 'sfcWind'))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert run.stdout.startswith("(0.514444")
    assert "Redefining" not in run.stderr, run.stderr
