"""
The wire contract and what carries it: AMP commands (``commands``), the
names that cross a process boundary (``names``), record codecs
(``records``), payloads and their streaming (``payload``, ``blobs``),
batching (``batch``), the handshake (``handshake``), connection liveness
(``peer``), reconnection (``reconnect``), and a blocking caller for scripts
that have no reactor (``blocking``).

This ``__init__`` imports nothing: the slot child imports ``names`` and
``payload``, which need only the standard library.
"""
