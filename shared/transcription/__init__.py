"""Opt-in transcription of stored recordings (Azure AI Speech fast transcription).

The job model (:mod:`.job`) loads with the first job, not with this package. The transcript's
name is the blob layout's (:mod:`shared.blob_layout`).
"""

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
    "SpeechClient",
    "TerminalTranscriptionError",
    "TranscriptionOutcome",
    "TransientTranscriptionError",
    "process_transcription",
]
