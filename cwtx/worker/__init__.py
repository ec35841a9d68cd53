"""
A worker host (``twistd cw-worker``): the supervisor holds the connection to
the master (``supervisor``) and runs each job in a slot (``slot``), a
persistent child process (``child``) it talks to over pipes (``pipe``).

This ``__init__`` imports nothing: the slot child (``python -m
cwtx.worker.child``) loads only the standard library and cloudpickle.
"""
