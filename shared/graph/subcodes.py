"""Meaning of the ``resultInfo.subcode`` values a record operation can end with."""

from __future__ import annotations

RECORD_SUBCODES: dict[int, str] = {
    8500: "invalid media mode",
    8501: "call not established",
    8503: "audio inactive",
    8508: "operation canceled",
    8509: "max silence timeout",
    8510: "initial silence timeout",
    8511: "play prompt failed",
    8512: "play beep failed",
    8513: "media receive timeout",
    8514: "stop tone detected",
    8515: "max record duration reached",
    8528: "call terminated",
    8535: "invalid file format",
    8536: "file download failed",
    8588: "record completed and media receive timeout",
    8589: "record throttled",
}


def describe_subcode(subcode: int | None) -> str:
    """``"8515: max record duration reached"``; unknown or missing subcodes say so."""
    if subcode is None:
        return "no subcode"
    meaning = RECORD_SUBCODES.get(subcode, "unknown subcode")
    return f"{subcode}: {meaning}"
