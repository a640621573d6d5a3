"""Opt-in transcription of stored recordings (Azure AI Speech fast transcription).

The erasure code deletes a recording's transcript with :func:`transcript_blob_name`.
"""

from shared.download.store import TRANSCRIPT_SUFFIX, transcript_blob_name
from shared.transcription.job import (
    TRANSCRIPTION_POISON_QUEUE,
    TRANSCRIPTION_QUEUE,
    TranscriptionJob,
    queue_transcription,
)
from shared.transcription.speech import (
    API_VERSION,
    COGNITIVE_SERVICES_SCOPE,
    SpeechClient,
    TerminalTranscriptionError,
    TransientTranscriptionError,
)
from shared.transcription.worker import TranscriptionOutcome, process_transcription

__all__ = [
    "API_VERSION",
    "COGNITIVE_SERVICES_SCOPE",
    "TRANSCRIPTION_POISON_QUEUE",
    "TRANSCRIPTION_QUEUE",
    "TRANSCRIPT_SUFFIX",
    "SpeechClient",
    "TerminalTranscriptionError",
    "TranscriptionJob",
    "TranscriptionOutcome",
    "TransientTranscriptionError",
    "process_transcription",
    "queue_transcription",
    "transcript_blob_name",
]
