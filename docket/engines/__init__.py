"""Engines run a rendered workflow: ``local`` (this machine, the default) and ``htcondor``."""
