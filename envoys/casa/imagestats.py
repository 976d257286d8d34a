"""Image statistics and a component list from a FITS image, in plain Python.

Post-CASA work runs on any node, with or without CASA, so it reads the exported FITS
file itself: the primary header, float pixels (BITPIX -32 or -64; NaN pixels, such as
those outside a primary-beam mask, are skipped), and a SIN (or any near-centre)
projection for sky positions.

- rms: 1.4826 × the median absolute deviation of the pixels (robust against the sources
  themselves), peak: the largest pixel, dynamic range: peak / rms;
- components: local maxima (3 × 3) above ``nsigma`` × rms on the first plane, brightest
  first, with pixel and sky positions.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docket.errors import Invalid

__all__ = ["FitsImage", "read_fits", "image_stats", "find_components"]

_BLOCK = 2880


@dataclass(frozen=True)
class FitsImage:
    path: Path
    header: dict[str, Any]
    shape: tuple[int, ...]  # NAXIS1, NAXIS2, ... (FITS order)
    pixels: list[float]  # FITS order: NAXIS1 fastest

    def plane(self, index: int = 0) -> list[float]:
        size = self.shape[0] * self.shape[1]
        return self.pixels[index * size:(index + 1) * size]

    @property
    def planes(self) -> int:
        return max(1, len(self.pixels) // (self.shape[0] * self.shape[1]))

    def sky(self, x: int, y: int) -> tuple[float, float] | None:
        """(ra, dec) in degrees of 0-based pixel (x, y), or None without a celestial WCS."""
        h = self.header
        if not str(h.get("CTYPE1", "")).startswith("RA") or "CRVAL1" not in h:
            return None
        ra0, dec0 = math.radians(h["CRVAL1"]), math.radians(h["CRVAL2"])
        l_ = math.radians((x + 1 - h["CRPIX1"]) * h["CDELT1"])
        m = math.radians((y + 1 - h["CRPIX2"]) * h["CDELT2"])
        n = math.sqrt(max(0.0, 1 - l_ * l_ - m * m))
        dec = math.asin(m * math.cos(dec0) + n * math.sin(dec0))
        ra = ra0 + math.atan2(l_, n * math.cos(dec0) - m * math.sin(dec0))
        return math.degrees(ra) % 360.0, math.degrees(dec)


def _value(text: str) -> Any:
    text = text.split("/", 1)[0].strip() if not text.strip().startswith("'") else text
    text = text.strip()
    if text.startswith("'"):
        return text[1:].split("'", 1)[0].rstrip()
    if text in ("T", "F"):
        return text == "T"
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def read_fits(path: Path) -> FitsImage:
    """The primary image of a FITS file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise Invalid(f"{path} does not exist", "the CASA step should have written it; see "
                      "working/casa-envoy-report.json") from None
    header: dict[str, Any] = {}
    offset = 0
    while True:
        if offset + _BLOCK > len(raw):
            raise Invalid(f"{path} is not a FITS file (no END card)",
                          "check the exportfits step of the recipe")
        block = raw[offset:offset + _BLOCK].decode("ascii", errors="replace")
        offset += _BLOCK
        done = False
        for i in range(0, _BLOCK, 80):
            card = block[i:i + 80]
            key = card[:8].strip()
            if key == "END":
                done = True
                break
            if card[8:10] == "= ":
                header[key] = _value(card[10:])
        if done:
            break
    bitpix, naxis = header.get("BITPIX"), int(header.get("NAXIS", 0))
    if bitpix not in (-32, -64) or naxis < 2:
        raise Invalid(f"{path}: only float images (BITPIX -32/-64, 2+ axes) are read, got "
                      f"BITPIX {bitpix}, NAXIS {naxis}", "export the image with exportfits")
    shape = tuple(int(header[f"NAXIS{i}"]) for i in range(1, naxis + 1))
    count = math.prod(shape)
    fmt = "f" if bitpix == -32 else "d"
    size = count * (4 if bitpix == -32 else 8)
    if offset + size > len(raw):
        raise Invalid(f"{path} is truncated: {len(raw) - offset} bytes of data, "
                      f"{size} expected", "export the image again")
    pixels = list(struct.unpack(f">{count}{fmt}", raw[offset:offset + size]))
    bscale, bzero = float(header.get("BSCALE", 1.0)), float(header.get("BZERO", 0.0))
    if bscale != 1.0 or bzero != 0.0:
        pixels = [p * bscale + bzero for p in pixels]
    return FitsImage(path, header, shape, pixels)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])


def image_stats(image: FitsImage) -> dict[str, Any]:
    """rms (robust), peak, dynamic range over every finite pixel; per plane for cubes."""

    def stats(values: list[float]) -> dict[str, Any]:
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return {"pixels": 0, "rms_jy": None, "peak_jy": None, "min_jy": None,
                    "dynamic_range": None}
        median = _median(finite)
        rms = 1.4826 * _median([abs(v - median) for v in finite])
        peak = max(finite)
        return {"pixels": len(finite), "rms_jy": rms, "peak_jy": peak, "min_jy": min(finite),
                "dynamic_range": (peak / rms) if rms > 0 else None}

    result = {"image": image.path.name, "shape": list(image.shape),
              "unit": image.header.get("BUNIT", ""), **stats(image.pixels)}
    if image.planes > 1:
        result["planes"] = [stats(image.plane(i)) for i in range(image.planes)]
    return result


def find_components(image: FitsImage, rms: float | None, nsigma: float,
                    limit: int = 100) -> list[dict[str, Any]]:
    """Local maxima of the first plane above ``nsigma`` × ``rms``, brightest first."""
    nx, ny = image.shape[0], image.shape[1]
    plane = image.plane(0)
    floor = nsigma * rms if rms else 0.0
    found = []
    for y in range(ny):
        for x in range(nx):
            value = plane[y * nx + x]
            if not math.isfinite(value) or value <= floor:
                continue
            neighbours = [plane[yy * nx + xx] for yy in range(max(0, y - 1), min(ny, y + 2))
                          for xx in range(max(0, x - 1), min(nx, x + 2)) if (xx, yy) != (x, y)]
            if all(not math.isfinite(v) or value >= v for v in neighbours):
                found.append((value, x, y))
    found.sort(reverse=True)
    components = []
    for index, (value, x, y) in enumerate(found[:limit], 1):
        sky = image.sky(x, y)
        components.append({
            "name": f"C{index}", "x_pix": x, "y_pix": y,
            "ra_deg": round(sky[0], 6) if sky else None,
            "dec_deg": round(sky[1], 6) if sky else None,
            "peak_jy": value, "snr": (value / rms) if rms else None})
    return components
