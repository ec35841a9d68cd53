"""
Clients: the Deferred client (``client``, ``connect``), the blocking
ClientThread and ClusterExecutor (``client_thread``, ``executor``) on one
reactor thread per process (``reactor_thread``), asyncio (``aio``), progress
bars, pickling (``serialize``), and where the master is (``address``).
"""
