"""The job's concurrency slots, leased to the Labeler process holding them so a dead holder's return.

Used by the Gate of ``python -m platform.label posts.csv --concurrency 8``. A Labeler actor that
dies (OOM, a lost node, a SIGKILL) never reports the end of the attempts it had in flight: with a
plain semaphore their slots would be gone for good, every death would lower the job's concurrency,
and enough of them would leave it waiting forever. So each slot is leased to a holder (one Labeler
process: a new id each time Ray starts the actor again) and comes back

- when the attempt ends (``give_back``);
- when the holder's actor joins again as a new process: Ray restarted it, and Ray never runs two
  processes of one actor at once, so the old one is dead (``join``: at once, the case of Ray Data,
  which restarts a dead actor and re-runs its batch);
- when the holder sent no heartbeat for LEASE_S (``reap``: a holder that died and was not
  restarted, or whose node was lost).

A holder taken for dead gets no slot afterwards: the requests it had queued at the gate when it
died would otherwise take the slots just freed, for answers nobody is there to read. Should it
beat again after all (a stall, not a death), it is alive again.
"""

from __future__ import annotations

import asyncio
import itertools
import time

HEARTBEAT_S = 1.0
# Ten missed heartbeats: a live holder is never this silent, even on a loaded machine, and a dead
# one's slots still come back within seconds.
LEASE_S = 10.0


class Leases:
    def __init__(self, slots: int):
        self._free = asyncio.Semaphore(slots)
        self._held: dict[int, str] = {}  # lease -> holder
        self._seen: dict[str, float] = {}  # holder -> time of its last sign of life
        self._actor: dict[str, str] = {}  # holder -> Ray actor id
        self._dead: set[str] = set()
        self._ids = itertools.count(1)
        self.revoked = 0

    @property
    def in_flight(self) -> int:
        return len(self._held)

    def alive(self, holder: str) -> bool:
        return holder not in self._dead

    async def take(self, holder: str) -> int | None:
        """A slot for ``holder`` once one is free; ``None`` if by then it is taken for dead."""
        await self._free.acquire()
        if not self.alive(holder):
            self._free.release()
            return None
        lease = next(self._ids)
        self._held[lease] = holder
        self._seen.setdefault(holder, time.monotonic())
        return lease

    def give_back(self, lease: int) -> bool:
        """Returns the slot; ``False`` if it was already returned (its holder was taken for dead)."""
        if self._held.pop(lease, None) is None:
            return False
        self._free.release()
        return True

    def join(self, holder: str, actor_id: str) -> None:
        """A Labeler process started: any other process of the same actor is dead."""
        for other, actor in list(self._actor.items()):
            if actor == actor_id and other != holder:
                self._drop(other)
        self.beat(holder)
        self._actor[holder] = actor_id

    def beat(self, holder: str) -> None:
        self._dead.discard(holder)
        self._seen[holder] = time.monotonic()

    def reap(self) -> None:
        """Takes back the slots of holders silent for LEASE_S."""
        now = time.monotonic()
        for holder, seen in list(self._seen.items()):
            if now - seen > LEASE_S:
                self._drop(holder)

    def _drop(self, holder: str) -> None:
        self._dead.add(holder)
        self._seen.pop(holder, None)
        self._actor.pop(holder, None)
        for lease, owner in list(self._held.items()):
            if owner == holder and self.give_back(lease):
                self.revoked += 1
