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
