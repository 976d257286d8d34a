"""The CASA envoy: runs CASA (or vela, its stand-in) for one processing directory.

The NRAO Workspaces envoy pattern: ``entry`` picks a launcher from the mode
(calibration, imaging, restore, restore-and-image); ``foundation`` checks the processing
directory and sets up CASA's environment; ``launchers`` build the CASA job and run it as
a child process; ``auditor`` holds docket's one definition of "CASA succeeded" and writes
the verdict to working/casa-envoy-report.json. The CLI is ``cli/casa_envoy.py``.
"""
