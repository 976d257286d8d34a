"""Envoys: wrappers that set up, launch and check an external program or service."""
