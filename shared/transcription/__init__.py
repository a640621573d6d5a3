"""Opt-in transcription of stored recordings (Azure AI Speech fast transcription).

The job model (:mod:`.job`) loads with the first job, not with this package. The erasure code
deletes a recording's transcript with :func:`transcript_blob_name`.
"""

from shared.download.store import TRANSCRIPT_SUFFIX, transcript_blob_name
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
    "TRANSCRIPT_SUFFIX",
    "SpeechClient",
    "TerminalTranscriptionError",
    "TranscriptionOutcome",
    "TransientTranscriptionError",
    "process_transcription",
    "transcript_blob_name",
]
