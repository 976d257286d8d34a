"""The tiny observation every VLASS workflow's example and test starts from.

    python -m envoys.casa.demodata DIR          (what ``make demo-data`` runs)

simulates one execution block with real CASA (``casatools.simulator``) and ingests it
with the ``ingest`` tool into the archive ``DIR/archive``, so a workflow fetches it by
locator, exactly as in production:

- ``J1331+3030``, a 1 Jy point-source calibrator, observed for 2 minutes;
- ``T1``, the target field one degree south, observed for 4 minutes: two point sources
  (0.5 Jy 60 arcsec east of the phase centre, 0.2 Jy 90 arcsec north);
- 12 antennas in a 1 km patch at the VLA, one spw of 4 channels of 2 MHz at 1.4 GHz,
  10 s integrations, RR and LL, 5 % antenna gain errors, 20 mJy noise.

The product is ``uid://docket/observation/demo-vlass/v1``; fetched with productfetcher
into ``rawdata/`` it is ``rawdata/demo-vlass/demo-vlass.ms`` (about 1 MB). ``DIR``
also gets ``tools.yaml`` naming the archive for ``ingest`` and ``productfetcher``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEMO_NAME", "DEMO_LOCATOR", "DemoData", "CALIBRATOR", "TARGET", "SOURCES",
           "build_demo_ms", "build_demo_data"]

DEMO_NAME = "demo-vlass"
DEMO_LOCATOR = f"uid://docket/observation/{DEMO_NAME}/v1"
CALIBRATOR = "J1331+3030"
TARGET = "T1"
# (name, right ascension, declination, flux in Jy) of the target field's sources
SOURCES = (("S1", "13h31m12.72s", "+29d30m33.0s", 0.5),
           ("S2", "13h31m08.29s", "+29d32m03.0s", 0.2))

_SIMULATE = r'''
import sys
import numpy as np
import casatools

ms, workdir = sys.argv[1], sys.argv[2]
me = casatools.measures()
fields = {"J1331+3030": ("13h31m08.29s", "+30d30m33.0s"),
          "T1": ("13h31m08.29s", "+29d30m33.0s")}
sources = [("13h31m08.29s", "+30d30m33.0s", 1.0)] + [(ra, dec, flux) for ra, dec, flux in
                                                      SOURCES_PLACEHOLDER]
cl = casatools.componentlist()
for ra, dec, flux in sources:
    cl.addcomponent(dir=f"J2000 {ra} {dec}", flux=flux, fluxunit="Jy", freq="1.4GHz",
                    shape="point")
cl.rename(workdir + "/sky.cl")
cl.close()
sm = casatools.simulator()
sm.open(ms)
n = 12
rng = np.random.default_rng(7)
sm.setconfig(telescopename="VLA", x=rng.uniform(-500, 500, n).tolist(),
             y=rng.uniform(-500, 500, n).tolist(), z=[0.0] * n, dishdiameter=[25.0] * n,
             mount=["alt-az"] * n, antname=[f"ea{i + 1:02d}" for i in range(n)],
             padname=[f"P{i:02d}" for i in range(n)], coordsystem="local",
             referencelocation=me.observatory("VLA"))
sm.setspwindow(spwname="LBand", freq="1.4GHz", deltafreq="2MHz", freqresolution="2MHz",
               nchannels=4, stokes="RR LL")
sm.setfeed(mode="perfect R L")
for name, (ra, dec) in fields.items():
    sm.setfield(sourcename=name, sourcedirection=me.direction("J2000", ra, dec))
sm.setlimits(shadowlimit=0.001, elevationlimit="8.0deg")
sm.setauto(autocorrwt=0.0)
sm.settimes(integrationtime="10s", usehourangle=True,
            referencetime=me.epoch("UTC", "2024/01/01/00:00:00"))
sm.observe("J1331+3030", "LBand", starttime="0s", stoptime="120s")
sm.observe("T1", "LBand", starttime="120s", stoptime="360s")
# the primary beam keeps each field's visibilities to its own sources
sm.setvp(dovp=True, usedefaultvp=True)
sm.predict(complist=workdir + "/sky.cl")
sm.setgain(mode="fbm", amplitude=[0.05])
sm.setnoise(mode="simplenoise", simplenoise="0.02Jy")
sm.corrupt()
sm.close()
'''


@dataclass(frozen=True)
class DemoData:
    root: Path
    archive: Path
    tools_config: Path
    ms: Path  # the simulated MS as ingested (the archive holds a read-only copy)
    locator: str = DEMO_LOCATOR


def build_demo_ms(workdir: Path, python: str | None = None) -> Path:
    """Simulate ``workdir/demo-vlass.ms`` with real CASA, in a child so its log stays there."""
    from envoys.casa.foundation import casa_environment, find_measures

    python = python or sys.executable
    workdir.mkdir(parents=True, exist_ok=True)
    ms = workdir / f"{DEMO_NAME}.ms"
    if (ms / "table.dat").is_file():
        return ms
    script = workdir / "simulate.py"
    script.write_text(_SIMULATE.replace(
        "SOURCES_PLACEHOLDER", repr([(ra, dec, flux) for _n, ra, dec, flux in SOURCES])))
    env = casa_environment(workdir, find_measures(python))
    partial = workdir / f".{ms.name}.partial"
    subprocess.run(["rm", "-rf", str(partial)], check=True)
    proc = subprocess.run([python, str(script), str(partial), str(workdir), "--noconfig"],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"simulating the demo MS failed (exit {proc.returncode}): "
                           f"{proc.stderr[-2000:]}")
    partial.rename(ms)  # only a complete MS gets the final name
    return ms


def build_demo_data(root: Path, python: str | None = None) -> DemoData:
    """The demo MS, ingested into ``root/archive``; the same call again changes nothing."""
    root = root.absolute()
    source = root / "observation"
    ms = build_demo_ms(source, python)
    archive = root / "archive"
    archive.mkdir(parents=True, exist_ok=True)
    manifest = {"docket_manifest": 1, "products": [
        {"name": DEMO_NAME, "type": "observation", "files": [f"{ms.name}/"],
         "metadata": {"fields": [CALIBRATOR, TARGET], "simulated": True}}]}
    (source / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    tools_config = root / "tools.yaml"
    tools_config.write_text(f"ingest:\n  archive_root: {archive}\n"
                            f"productfetcher:\n  catalog: {archive}\n")
    bin_dir = Path(sys.executable).parent
    ingest = bin_dir / "ingest"
    command = [str(ingest)] if ingest.exists() else [sys.executable, "-m", "cli.ingest"]
    proc = subprocess.run([*command, "--config", str(tools_config), "--json", "-q",
                           str(source)], capture_output=True, text=True, timeout=300,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ingesting the demo MS failed: {proc.stderr.strip()}")
    locator = json.loads(proc.stdout)["products"][0]["locator"]
    return DemoData(root, archive, tools_config, ms, locator)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        sys.stderr.write("usage: python -m envoys.casa.demodata DIR\n")
        return 2
    data = build_demo_data(Path(args[0]))
    print(f"demo observation {data.locator} in {data.archive}")
    print(f"tools config: {data.tools_config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
