"""Reference counting as an I/O-free state machine (one table per process).

An object stays alive while any of these holds it: a local ``ObjectRef`` in this process, a
pending task that takes it as an argument, another live object that contains it, a borrower
process, or an explicit pin. The owner's table frees it when all reach zero; a borrower's table
releases its borrow instead. Each call returns the ids whose last holder just went away.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .transitions import InvalidTransition, Transition, TransitionLog, now


def _transition(t: float, old: str, new: str, cause: str) -> Transition:
    # tuple.__new__ skips the NamedTuple's Python-level __new__ (a third of a free's cost).
    return tuple.__new__(Transition, (t, old, new, cause))


@dataclass(slots=True)
class RefEntry:
    owned: bool
    local: int = 0
    submitted: int = 0
    borrowers: set[str] | None = None
    contained_in: set[bytes] | None = None
    contains: tuple[bytes, ...] = ()
    pinned: bool = False

    def holders(self) -> list[str]:
        """What keeps this object alive, in the words `freight memory` uses."""
        out = []
        if self.local:
            out.append(f"local reference x{self.local}")
        if self.submitted:
            out.append(f"pending task argument x{self.submitted}")
        if self.contained_in:
            out.append(f"contained in {len(self.contained_in)} object(s)")
        if self.borrowers:
            out.append(f"borrowed by {len(self.borrowers)} process(es)")
        if self.pinned:
            out.append("pinned")
        return out

    def dead(self) -> bool:
        return not (
            self.local or self.submitted or self.borrowers or self.contained_in or self.pinned
        )


class ReferenceTable:
    """Counts for every object this process owns or borrows."""

    def __init__(self, validate: bool = False, history: int = 1000) -> None:
        self.entries: dict[bytes, RefEntry] = {}
        self.log = TransitionLog()
        self.recent: deque[tuple[bytes, Transition]] = deque(maxlen=history)
        self.freed_total = 0
        self._validate = validate

    # -- events ------------------------------------------------------------------------------

    def add_local(self, oid: bytes, owned: bool) -> None:
        e = self.entries.get(oid)
        if e is None:
            e = self.entries[oid] = RefEntry(owned=owned)
        e.local += 1

    def remove_local(self, oid: bytes) -> list[bytes]:
        e = self.entries.get(oid)
        if e is None or e.local <= 0:
            return []
        e.local -= 1
        return self._collect(oid, e, "local reference dropped") if e.local == 0 else []

    def remove_locals(self, oids: list[bytes]) -> list[bytes]:
        """``remove_local`` for each id in order (one call for a batch of dropped refs)."""
        freed: list[bytes] = []
        entries = self.entries
        get = entries.get
        cause = "local reference dropped"
        tr = _transition(now(), "ALIVE", "FREED", cause)  # one instant for the whole batch
        recent = self.recent.append
        listening = self.log.listening()
        for oid in oids:
            e = get(oid)
            if e is None or e.local <= 0:
                continue
            e.local -= 1
            if e.local or e.submitted or e.borrowers or e.contained_in or e.pinned:
                continue
            if e.contains or self._validate:
                freed += self._collect(oid, e, cause)
                continue
            # The common case inlined: nothing else holds it and it contains nothing.
            del entries[oid]
            self.freed_total += 1
            freed.append(oid)
            recent((oid, tr))
            if listening:
                self.log.emit(oid.hex(), tr)
        return freed

    def add_submitted(self, oids: list[bytes]) -> None:
        for oid in oids:
            e = self.entries.get(oid)
            if e is None:
                e = self.entries[oid] = RefEntry(owned=False)
            e.submitted += 1

    def remove_submitted(self, oids: list[bytes]) -> list[bytes]:
        freed: list[bytes] = []
        for oid in oids:
            e = self.entries.get(oid)
            if e is not None and e.submitted > 0:
                e.submitted -= 1
                if e.submitted == 0:
                    freed += self._collect(oid, e, "task argument released")
        return freed

    def add_borrower(self, oid: bytes, borrower: str) -> bool:
        """Record a borrower; False when the object is already gone."""
        e = self.entries.get(oid)
        if e is None:
            return False
        if e.borrowers is None:
            e.borrowers = set()
        e.borrowers.add(borrower)
        return True

    def add_borrowers(self, oids: list[bytes], borrower: str) -> list[bytes]:
        """``add_borrower`` for each id; return the ids already gone."""
        missing: list[bytes] = []
        get = self.entries.get
        for oid in oids:
            e = get(oid)
            if e is None:
                missing.append(oid)
            elif e.borrowers is None:
                e.borrowers = {borrower}
            else:
                e.borrowers.add(borrower)
        return missing

    def remove_borrowers(self, oids: list[bytes], borrower: str) -> list[bytes]:
        """``remove_borrower`` for each id; return the ids freed."""
        freed: list[bytes] = []
        get = self.entries.get
        cause = ""
        for oid in oids:
            e = get(oid)
            if e is None or not e.borrowers or borrower not in e.borrowers:
                continue
            e.borrowers.discard(borrower)
            if e.local or e.submitted or e.borrowers or e.contained_in or e.pinned:
                continue  # still held: nothing to collect
            cause = cause or f"borrower {borrower} released"
            freed += self._collect(oid, e, cause)
        return freed

    def remove_borrower(self, oid: bytes, borrower: str) -> list[bytes]:
        e = self.entries.get(oid)
        if e is None or not e.borrowers or borrower not in e.borrowers:
            return []
        e.borrowers.discard(borrower)
        return self._collect(oid, e, f"borrower {borrower} released")

    def remove_borrower_everywhere(self, borrower: str) -> list[bytes]:
        """A borrower process died: drop it from every entry, with the keys it held objects
        under inside task returns (``<borrower>#<return id>``)."""
        freed: list[bytes] = []
        inner = borrower + "#"
        borrowed = [(oid, e) for oid, e in self.entries.items() if e.borrowers]
        for oid, e in borrowed:
            if not e.borrowers:
                continue  # freed meanwhile by a container collected in this loop
            gone = {b for b in e.borrowers if b == borrower or b.startswith(inner)}
            if gone:
                e.borrowers -= gone
                freed += self._collect(oid, e, f"borrower {borrower} died")
        return freed

    def set_contains(self, outer: bytes, inners: list[bytes]) -> None:
        """``outer`` holds references to ``inners``: they live at least as long as it does."""
        e = self.entries.get(outer)
        if e is None or not inners:
            return
        e.contains = tuple(inners)
        for inner in inners:
            ie = self.entries.get(inner)
            if ie is None:
                ie = self.entries[inner] = RefEntry(owned=False)
            if ie.contained_in is None:
                ie.contained_in = set()
            ie.contained_in.add(outer)

    def pin(self, oid: bytes, pinned: bool = True) -> list[bytes]:
        e = self.entries.get(oid)
        if e is None:
            return []
        e.pinned = pinned
        return [] if pinned else self._collect(oid, e, "unpinned")

    # -- internals ---------------------------------------------------------------------------

    def _collect(self, oid: bytes, e: RefEntry, cause: str) -> list[bytes]:
        if e.local or e.submitted or e.borrowers or e.contained_in or e.pinned:
            return []
        freed = [oid]
        stack = [(oid, e, cause)]
        listening = self.log.listening()
        t = now()
        while stack:
            cur, ce, why = stack.pop()
            del self.entries[cur]
            self.freed_total += 1
            tr = _transition(t, "ALIVE", "FREED", why)
            self.recent.append((cur, tr))
            if listening:
                self.log.emit(cur.hex(), tr)
            if not ce.contains:
                continue
            for inner in ce.contains:
                ie = self.entries.get(inner)
                if ie is None or not ie.contained_in:
                    continue
                ie.contained_in.discard(cur)
                if ie.dead():
                    freed.append(inner)
                    stack.append((inner, ie, f"container {cur.hex()} freed"))
        if self._validate:
            for cur in freed:
                if cur in self.entries:
                    raise InvalidTransition(f"object {cur.hex()} freed but still in the table")
                for inner in e.contains:
                    self.validate_entry(inner)
        return freed

    def validate_entry(self, oid: bytes) -> None:
        """One entry's counts are non-negative and its containment links point both ways."""
        e = self.entries.get(oid)
        if e is None:
            return
        if e.local < 0 or e.submitted < 0:
            raise InvalidTransition(f"object {oid.hex()}: negative count")
        if e.dead():
            raise InvalidTransition(f"object {oid.hex()}: nothing holds it but it was not freed")
        for outer in e.contained_in or ():
            oe = self.entries.get(outer)
            if oe is None or oid not in oe.contains:
                raise InvalidTransition(f"object {oid.hex()}: dangling container link")

    def validate(self) -> None:
        """Check every entry (see validate_entry)."""
        for oid in self.entries:
            self.validate_entry(oid)

    def statistics(self) -> dict[str, int]:
        return {"objects": len(self.entries), "freed_total": self.freed_total}
