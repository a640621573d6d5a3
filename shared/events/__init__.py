"""Recording lifecycle events: CloudEvents 1.0 through Azure Event Grid (docs/events.md).

Downstream systems learn of every step of a recording's life (stored, failed, transcribed,
erased, expired...) without polling the status API. The ledger owes each step's event from the
write that made the step (:mod:`shared.ledger.outbox`); this package builds the event from the
row (:mod:`.cloudevent`), publishes it without holding up the step (:mod:`.outbox`), retries it
on its own queue (:mod:`.job`, :mod:`.worker`) and re-drives what an instance left owed
(:mod:`.redrive`). Off unless ``EVENTS_ENDPOINT`` is set.
"""
