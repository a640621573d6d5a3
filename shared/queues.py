"""The app's queues: their names (the triggers' decorators and Bicep use the same) and job lifetime.

Plain constants, apart from the job models, so that a trigger's decorator loads no pydantic.
"""

from __future__ import annotations

from datetime import timedelta

DOWNLOAD_QUEUE = "recording-downloads"
POISON_QUEUE = f"{DOWNLOAD_QUEUE}-poison"
# The platform discards a recording shortly after the call ends; a job older than this cannot
# succeed, so letting it expire on the queue is better than poisoning it later.
JOB_TIME_TO_LIVE = timedelta(minutes=15)

TRANSCRIPTION_QUEUE = "recording-transcriptions"
TRANSCRIPTION_POISON_QUEUE = f"{TRANSCRIPTION_QUEUE}-poison"

# Recording lifecycle events (opt-in, EVENTS_ENDPOINT): publishes that did not go out at once.
EVENTS_QUEUE = "recording-events"
EVENTS_POISON_QUEUE = f"{EVENTS_QUEUE}-poison"
# An event job names a ledger row and a step; the row says whether it is still owed, so a job
# may wait as long as the row lives (the sweep re-sends any that expired unpublished).
EVENT_JOB_TIME_TO_LIVE = timedelta(days=1)
