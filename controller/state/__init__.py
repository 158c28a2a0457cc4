"""The controller's durable state: decisions, instances, measurements and the leader lease.

`StateStore(url)` opens (and migrates) a SQLite or PostgreSQL database; see store.py.
"""
from controller.state.lease import Lease
from controller.state.store import LeaseLost, RecordedDecision, StateError, StateStore, migrate

__all__ = ["Lease", "LeaseLost", "RecordedDecision", "StateError", "StateStore", "migrate"]
