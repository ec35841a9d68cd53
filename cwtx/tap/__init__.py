"""
The twistd glue: ``twistd cw-master`` (``master``) and ``twistd cw-worker``
(``worker``) options and services, what they share (``common``), and the
``mtls:`` server endpoint (``mtls``).  twisted/plugins only points here.
"""
