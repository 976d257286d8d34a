"""Post-CASA work without CASA: image statistics, automatic QA and component lists from a
FITS file written here, with a celestial WCS."""

from __future__ import annotations

import math
import random
import struct
from pathlib import Path

import pytest

from docket.errors import Invalid
from envoys.casa.imagestats import find_components, image_stats, read_fits
from envoys.casa.postcasa import qa_verdict


def write_fits(path: Path, pixels: list[float], n: int, planes: int = 1) -> None:
    cards = ["SIMPLE  =                    T", "BITPIX  =                  -32",
             f"NAXIS   = {4 if planes > 1 else 2:>20}", f"NAXIS1  = {n:>20}",
             f"NAXIS2  = {n:>20}"]
    if planes > 1:
        cards += ["NAXIS3  =                    1", f"NAXIS4  = {planes:>20}"]
    cards += ["BUNIT   = 'Jy/beam '", "CTYPE1  = 'RA---SIN'", "CTYPE2  = 'DEC--SIN'",
              "CRVAL1  =        202.784541667", "CRVAL2  =        29.5091666667",
              f"CRPIX1  = {n // 2 + 1:>20}", f"CRPIX2  = {n // 2 + 1:>20}",
              "CDELT1  = -0.00111111111111 / 4 arcsec", "CDELT2  =  0.00111111111111",
              "END"]
    header = "".join(c.ljust(80) for c in cards).encode()
    header += b" " * (-len(header) % 2880)
    data = struct.pack(f">{len(pixels)}f", *pixels)
    path.write_bytes(header + data + b"\0" * (-len(data) % 2880))


def sky(n: int = 64) -> list[float]:
    """Gaussian noise of rms 0.01 (seeded), a 0.5 source 15 px east of the centre, a 0.2
    source 22 px north, NaN in one corner (a primary-beam mask)."""
    rng = random.Random(1)
    pixels = [rng.gauss(0.0, 0.01) for _ in range(n * n)]
    pixels[(n // 2) * n + (n // 2 - 15)] = 0.5
    pixels[(n // 2 + 22) * n + n // 2] = 0.2
    pixels[0] = float("nan")
    return pixels


def test_statistics_qa_and_components_of_a_known_sky(tmp_path):
    write_fits(tmp_path / "t.fits", sky(), 64)
    image = read_fits(tmp_path / "t.fits")
    stats = image_stats(image)
    assert stats["pixels"] == 64 * 64 - 1  # the NaN is skipped
    assert 0.007 < stats["rms_jy"] < 0.013 and stats["peak_jy"] == pytest.approx(0.5)
    assert stats["dynamic_range"] == pytest.approx(0.5 / stats["rms_jy"])
    verdict = qa_verdict(stats, {"max_rms_jy": 0.05, "min_dynamic_range": 100})
    assert verdict["verdict"] == "fail"
    assert [c["pass"] for c in verdict["checks"]] == [True, False]
    components = find_components(image, stats["rms_jy"], 5)
    assert [round(c["peak_jy"], 3) for c in components] == [0.5, 0.2]
    s1, s2 = components
    # 15 px of 4 arcsec east at dec 29.5: +60 arcsec / cos(dec) in RA
    assert s1["ra_deg"] == pytest.approx(202.784541667 + 60 / 3600 / math.cos(
        math.radians(29.5091666667)), abs=2e-5)
    assert s1["dec_deg"] == pytest.approx(29.5091666667, abs=2e-5)
    assert s2["dec_deg"] == pytest.approx(29.5091666667 + 88 / 3600, abs=2e-5)


def test_a_cube_has_statistics_per_plane(tmp_path):
    plane = sky()
    write_fits(tmp_path / "c.fits", plane + [2 * v for v in plane], 64, planes=2)
    stats = image_stats(read_fits(tmp_path / "c.fits"))
    assert len(stats["planes"]) == 2
    assert stats["planes"][1]["peak_jy"] == pytest.approx(2 * stats["planes"][0]["peak_jy"])


def test_a_file_that_is_not_a_float_image_is_refused_clearly(tmp_path):
    (tmp_path / "x.fits").write_bytes(b"SIMPLE  =   T" + b" " * 3000)
    with pytest.raises(Invalid, match="not a FITS file"):
        read_fits(tmp_path / "x.fits")
    write_fits(tmp_path / "t.fits", sky(), 64)
    (tmp_path / "short.fits").write_bytes((tmp_path / "t.fits").read_bytes()[:3000])
    with pytest.raises(Invalid, match="truncated"):
        read_fits(tmp_path / "short.fits")
