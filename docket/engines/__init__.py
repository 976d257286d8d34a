"""Engines run a rendered workflow: ``local`` (this machine, the default) and ``htcondor``.

``base`` is the one interface (``Engine``) and its engine-neutral records; ``registry``
says which engine runs a site. Everything outside this package uses only those two.
"""
