"""
Launchers: start and stop a master and its workers.  ``local`` runs them as
processes on this machine.
"""
