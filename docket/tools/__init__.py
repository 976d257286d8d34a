"""The standalone tools' libraries.

Nothing here imports the watcher's state (``docket.store``, ``docket.intake``, ...):
each tool is built into its own PEX file and runs on any cluster node. A test
enforces the rule.
"""
