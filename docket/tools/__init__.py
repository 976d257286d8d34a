"""The standalone tools' libraries.

Nothing here imports the watcher's state (``docket.store``, ``docket.intake``, ...)
or the engines (but for task-worker's container helper, the leaf module
``docket.engines.container``): each tool is built into its own PEX file and runs on any
cluster node. tests/tools/test_tool_imports.py enforces the rule. What the tools share with the core
is small and standalone: the processing-directory contract (``docket.procdir``), the
lock (``docket.locks``), careful file writes (``docket.fileio``) and the errors.
"""
