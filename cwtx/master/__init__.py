"""
The master (``twistd cw-master``): it routes jobs from clients to workers.
Bookkeeping (``master``, ``sessions``) and the dispatch policy (``policy``)
do no I/O; ``connection`` authenticates each peer and hands it to the
responders of its role (``roles``); ``service`` listens.
"""
