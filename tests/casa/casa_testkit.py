"""Helpers for the CASA envoy and vela tests: processing directories, a tiny real MS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

BIN = Path(sys.executable).parent
ENVOY = BIN / "casa-envoy"
VELA = BIN / "vela"

# casatools.simulator: 12 antennas in a 1 km patch at the VLA, 8 channels of 1 MHz at
# 1.4 GHz, 10 minutes of 10 s integrations on a 1 Jy point source, 0.1 Jy noise.
SIMULATE = r'''
import sys
import numpy as np
import casatools

ms, cl_path = sys.argv[1], sys.argv[2]
me = casatools.measures()
cl = casatools.componentlist()
cl.addcomponent(dir="J2000 10h00m00.0s -30d00m00.0s", flux=1.0, fluxunit="Jy",
                freq="1.4GHz", shape="point")
cl.rename(cl_path)
cl.close()
sm = casatools.simulator()
sm.open(ms)
n = 12
rng = np.random.default_rng(1)
sm.setconfig(telescopename="VLA", x=rng.uniform(-500, 500, n).tolist(),
             y=rng.uniform(-500, 500, n).tolist(), z=[0.0] * n, dishdiameter=[25.0] * n,
             mount=["alt-az"] * n, antname=[f"A{i:02d}" for i in range(n)],
             padname=[f"P{i:02d}" for i in range(n)], coordsystem="local",
             referencelocation=me.observatory("VLA"))
sm.setspwindow(spwname="LBand", freq="1.4GHz", deltafreq="1MHz", freqresolution="1MHz",
               nchannels=8, stokes="RR LL")
sm.setfeed(mode="perfect R L")
sm.setfield(sourcename="pt", sourcedirection=me.direction("J2000", "10h00m00.0s",
                                                          "-30d00m00.0s"))
sm.setlimits(shadowlimit=0.001, elevationlimit="8.0deg")
sm.setauto(autocorrwt=0.0)
sm.settimes(integrationtime="10s", usehourangle=True,
            referencetime=me.epoch("UTC", "2024/01/01/00:00:00"))
sm.observe("pt", "LBand", starttime="0s", stoptime="600s")
sm.predict(complist=cl_path)
sm.setnoise(mode="simplenoise", simplenoise="0.1Jy")
sm.corrupt()
sm.close()
'''


def build_tiny_ms(workdir: Path) -> Path:
    """Simulate the tiny MS in ``workdir`` with real CASA (in a child, so its log stays there)."""
    from envoys.casa.foundation import casa_environment, find_measures

    workdir.mkdir(parents=True, exist_ok=True)
    env = casa_environment(workdir, find_measures(sys.executable))
    script = workdir / "simulate.py"
    script.write_text(SIMULATE)
    ms = workdir / "tiny.ms"
    proc = subprocess.run([sys.executable, str(script), str(ms), str(workdir / "pt.cl"),
                           "--noconfig"], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ms


def fake_ms(path: Path) -> Path:
    """A stand-in MS for vela runs (vela only needs the directory to exist)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "table.dat").write_text("not a real table\n")
    return path


def make_processing_dir(root: Path, parameters: dict[str, Any], *, ms: Path | None = None,
                        name: str = "req-1", capability: str = "casa-imaging",
                        recorded_dir: str | None = None,
                        metadata_parameters: dict[str, Any] | None = None,
                        rawdata_extra: dict[str, Path] | None = None) -> Path:
    """A processing directory as docket's core writes it."""
    (root / "rawdata").mkdir(parents=True)
    (root / "working").mkdir()
    (root / "products").mkdir()
    if ms is not None:
        shutil.copytree(ms, root / "rawdata" / ms.name)
    for target, source in (rawdata_extra or {}).items():
        shutil.copytree(source, root / "rawdata" / target)
    metadata = {
        "docket": 1, "request": name, "version": 1, "execution": 1,
        "capability": capability,
        "parameters": parameters if metadata_parameters is None else metadata_parameters,
        "directory": recorded_dir or str(root), "output_dir": None,
        "created": "2026-11-21T09:00:00+00:00",
    }
    (root / "metadata.json").write_text(json.dumps(metadata, indent=2))
    request = {"apiVersion": "docket/v1", "kind": "CapabilityRequest",
               "metadata": {"name": name},
               "spec": {"capability": capability, "parameters": parameters}}
    (root / "request.yaml").write_text(yaml.safe_dump(request, sort_keys=False))
    return root


def envoy(*args: str | Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> tuple[subprocess.CompletedProcess[str], dict | None]:
    """Run the installed casa-envoy; return the process and its --json output if any."""
    full_env = dict(os.environ)
    full_env.pop("OMP_NUM_THREADS", None)
    full_env.update(env or {})
    proc = subprocess.run([str(ENVOY), *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=600, check=False)
    payload = None
    if "--json" in args and proc.stdout.strip():
        payload = json.loads(proc.stdout)
    return proc, payload


def reason_codes(report: dict) -> list[str]:
    return [r["code"] for r in report["reasons"]]


def read_report(pdir: Path) -> dict:
    return json.loads((pdir / "working" / "casa-envoy-report.json").read_text())
