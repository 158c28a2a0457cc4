"""Leader lease with a fencing token, so that two daemons never both act.

A lease is one row (name, holder, token, expires_at_s). Taking it is a conditional UPDATE --
"become the holder if I already am, nobody is, or the lease has expired" -- followed, when the row
does not exist yet, by INSERT ... ON CONFLICT DO NOTHING. Both run in the caller's transaction:

- SQLite: the store begins every write transaction with BEGIN IMMEDIATE, which takes the
  database's write lock before the UPDATE reads anything, so lease transactions run one at a time.
- PostgreSQL (READ COMMITTED): a concurrent UPDATE of the same row waits for the first to commit
  and then re-checks its WHERE clause against the new row, so the loser sees "held by someone
  else, not expired" and updates nothing; a concurrent INSERT of an absent row waits on the
  unique key and then does nothing.

Either way exactly one contender gets a row back. Grants to different holders never overlap in
time: B can take over only at a `now_s` at or after A's `expires_at_s`.

The token grows by one on every change of holder and stays the same on renewal. A daemon passes
its Lease as `fence=` to the store's decision writes; the store refuses them once the token has
moved on, so a deposed leader that wakes up from a long pause cannot record (and then act on) a
decision. Released leases keep their row (holder NULL), so the token never goes back.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, case, or_, select, update

from controller.state.models import LeaseRow


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    token: int              # fencing token: increases on every change of holder
    acquired_at_s: float    # when this holder took it (unchanged by renewals)
    expires_at_s: float


def acquire_or_renew(conn: Connection, insert, name: str, holder: str, ttl_s: float,
                     now_s: float) -> Lease | None:
    """Take or renew `name` for `holder` until now_s + ttl_s; None if someone else holds it.

    `insert` is the dialect's insert() (sqlite or postgresql), which has on_conflict_do_nothing.
    """
    expires_at_s = now_s + ttl_s
    mine = LeaseRow.holder == holder
    # SET expressions read the row's values before the update, on both backends.
    taken = conn.execute(
        update(LeaseRow)
        .where(LeaseRow.name == name,
               or_(mine, LeaseRow.holder.is_(None), LeaseRow.expires_at_s <= now_s))
        .values(holder=holder, expires_at_s=expires_at_s,
                token=case((mine, LeaseRow.token), else_=LeaseRow.token + 1),
                acquired_at_s=case((mine, LeaseRow.acquired_at_s), else_=now_s))
        .returning(LeaseRow.token, LeaseRow.acquired_at_s)).first()
    if taken is None:
        taken = conn.execute(
            insert(LeaseRow)
            .values(name=name, holder=holder, token=1, acquired_at_s=now_s, expires_at_s=expires_at_s)
            .on_conflict_do_nothing(index_elements=[LeaseRow.name])
            .returning(LeaseRow.token, LeaseRow.acquired_at_s)).first()
    if taken is None:
        return None
    return Lease(name, holder, int(taken.token), float(taken.acquired_at_s), expires_at_s)


def release(conn: Connection, name: str, holder: str) -> bool:
    """Give up `name` if `holder` holds it; True if it did."""
    result = conn.execute(update(LeaseRow).where(LeaseRow.name == name, LeaseRow.holder == holder)
                          .values(holder=None))
    return result.rowcount == 1


def current(conn: Connection, name: str) -> Lease | None:
    """The lease as recorded (possibly expired), or None if nobody holds it."""
    row = conn.execute(select(LeaseRow).where(LeaseRow.name == name)).first()
    if row is None or row.holder is None:
        return None
    return Lease(row.name, row.holder, row.token, row.acquired_at_s, row.expires_at_s)


def still_held(conn: Connection, lease: Lease) -> bool:
    """Whether `lease` is still the current grant (same holder, same token).

    On PostgreSQL the row is share-locked until the caller's transaction ends, so a takeover
    commits after the fenced write, never between the check and the write. (SQLite ignores the
    clause; its write lock already serialises the two.)
    """
    token = conn.scalar(select(LeaseRow.token)
                        .where(LeaseRow.name == lease.name, LeaseRow.holder == lease.holder)
                        .with_for_update(read=True))
    return token == lease.token
