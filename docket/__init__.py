"""docket: file-driven batch processing for observatory data on HTCondor clusters.

The package is the library behind every CLI: ``docket.intake`` (spool → records),
``docket.rules`` (versions, state machines, queues), ``docket.render`` (Jinja2 →
DAG and submit files), ``docket.engines`` (local and HTCondor), ``docket.engines.nodelog``
(engine event logs → state). ``docket.tools`` holds the standalone tools; they
import nothing from the watcher's state.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
