"""Request body validation for the calls API, following Graph's documented limits."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

DTMF_TONES = frozenset("0123456789*#ABCD")
TIMEOUT_FIELDS = (
    "initialSilenceTimeoutInSeconds",
    "maxSilenceTimeoutInSeconds",
    "maxRecordDurationInSeconds",
)
TIMEOUT_MIN, TIMEOUT_MAX, TIMEOUT_DEFAULT = 1, 120, 5
CLIENT_CONTEXT_MAX = 256
# call: recordResponse: "The maximum supported mediaPrompt collection size is 1";
# call: playPrompt: "The maximum supported MediaPrompt collection size is 20".
MAX_PROMPTS = 1
MAX_PLAY_PROMPTS = 20
RECORD_FIELDS = frozenset(
    {
        "prompts",
        "bargeInAllowed",
        "playBeep",
        "stopTones",
        "clientContext",
        *TIMEOUT_FIELDS,
    }
)
SERVICE_HOSTED = "#microsoft.graph.serviceHostedMediaConfig"
APP_HOSTED = "#microsoft.graph.appHostedMediaConfig"
# call: answer: "Possible values are: audio, video, videoBasedScreenSharing."
MODALITIES = frozenset({"audio", "video", "videoBasedScreenSharing"})
# call: reject: "Possible values are None, Busy and Forbidden" (the examples write them lower-case).
REJECT_REASONS = frozenset({"none", "busy", "forbidden"})


class GraphError(Exception):
    """An error answered in Graph's error JSON shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _bad(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.", "InvalidRequest")
    return body


def _bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise _bad(f"'{name}' must be a boolean.")
    return value


def _client_context(body: dict[str, Any]) -> str | None:
    value = body.get("clientContext")
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad("'clientContext' must be a string.")
    if len(value) > CLIENT_CONTEXT_MAX:
        raise _bad(
            f"'clientContext' is {len(value)} characters; the maximum is {CLIENT_CONTEXT_MAX}."
        )
    return value


def _prompts(
    body: dict[str, Any], *, required: bool, limit: int = MAX_PROMPTS
) -> list[dict[str, Any]]:
    prompts = body.get("prompts")
    if prompts is None:
        if required:
            raise _bad("'prompts' is required.")
        return []
    if not isinstance(prompts, list):
        raise _bad("'prompts' must be an array of mediaPrompt.")
    if len(prompts) > limit:
        raise _bad(f"'prompts' has {len(prompts)} items; at most {limit} supported.")
    if required and not prompts:
        raise _bad("'prompts' must contain at least one mediaPrompt.")
    for prompt in prompts:
        if not isinstance(prompt, dict):
            raise _bad("Each prompt must be a mediaPrompt object.")
        odata_type = str(prompt.get("@odata.type", "#microsoft.graph.mediaPrompt"))
        if odata_type.lower() != "#microsoft.graph.mediaprompt":
            raise _bad(
                f"Unsupported prompt type '{odata_type}'; expected #microsoft.graph.mediaPrompt."
            )
        media_info = prompt.get("mediaInfo")
        if not isinstance(media_info, dict) or not isinstance(media_info.get("uri"), str):
            raise _bad("Each prompt needs 'mediaInfo.uri'.")
    return prompts


def validate_record_response(body: Any) -> dict[str, Any]:
    """Check a recordResponse body; return it normalized with Graph's defaults applied."""
    data = require_object(body)
    unknown = sorted(k for k in data if k not in RECORD_FIELDS and not k.startswith("@odata"))
    if unknown:
        raise _bad(f"Unknown property '{unknown[0]}' in recordResponse.", "UnknownProperty")
    params: dict[str, Any] = {
        "prompts": _prompts(data, required=False),
        "bargeInAllowed": _bool(data, "bargeInAllowed", False),
        "playBeep": _bool(data, "playBeep", True),
        "clientContext": _client_context(data),
    }
    for name in TIMEOUT_FIELDS:
        value = data.get(name, TIMEOUT_DEFAULT)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(f"'{name}' must be an integer number of seconds.")
        if not TIMEOUT_MIN <= value <= TIMEOUT_MAX:
            raise _bad(f"'{name}' is {value}; it must be between {TIMEOUT_MIN} and {TIMEOUT_MAX}.")
        params[name] = value
    tones = data.get("stopTones", [])
    if tones is None:
        tones = []
    if not isinstance(tones, list):
        raise _bad("'stopTones' must be an array of DTMF tones.")
    for tone in tones:
        if not isinstance(tone, str) or tone not in DTMF_TONES:
            raise _bad(f"'stopTones' contains {tone!r}; allowed tones are 0-9, *, # and A-D.")
    params["stopTones"] = tones
    return params


def validate_play_prompt(body: Any) -> dict[str, Any]:
    data = require_object(body)
    return {
        "prompts": _prompts(data, required=True, limit=MAX_PLAY_PROMPTS),
        "clientContext": _client_context(data),
    }


def validate_subscribe_to_tone(body: Any) -> dict[str, Any]:
    """call: subscribeToTone takes one parameter, clientContext."""
    data = require_object(body if body is not None else {})
    return {"clientContext": _client_context(data)}


def _callback_uri(data: dict[str, Any], *, allow_insecure: bool, required: bool) -> str | None:
    callback = data.get("callbackUri")
    if callback is None and not required:
        return None
    if not isinstance(callback, str) or not callback:
        raise _bad("'callbackUri' is required.")
    scheme = urlsplit(callback).scheme.lower()
    allowed = {"https", "http"} if allow_insecure else {"https"}
    if scheme not in allowed:
        raise _bad(f"'callbackUri' must be an https URL (got scheme '{scheme}').")
    return callback


def validate_reject(body: Any, *, allow_insecure: bool) -> dict[str, Any]:
    data = require_object(body if body is not None else {})
    reason = data.get("reason", "none")
    if not isinstance(reason, str) or reason.lower() not in REJECT_REASONS:
        raise _bad(f"'reason' is {reason!r}; it must be one of None, Busy, Forbidden.")
    return {
        "reason": reason.lower(),
        "callbackUri": _callback_uri(data, allow_insecure=allow_insecure, required=False),
    }


def _media_infos(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad("'mediaConfig.preFetchMedia' must be an array of mediaInfo.")
    infos = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("uri"), str):
            raise _bad("Each 'mediaConfig.preFetchMedia' item needs 'uri'.")
        info = {"uri": item["uri"]}
        if item.get("resourceId") is not None:
            info["resourceId"] = str(item["resourceId"])
        infos.append(info)
    return infos


def validate_answer(body: Any, *, allow_insecure: bool) -> dict[str, Any]:
    data = require_object(body)
    callback = _callback_uri(data, allow_insecure=allow_insecure, required=True)
    modalities = data.get("acceptedModalities")
    if not isinstance(modalities, list) or not modalities:
        raise _bad("'acceptedModalities' must be a non-empty array.")
    for modality in modalities:
        if modality not in MODALITIES:
            raise _bad(f"Unknown modality {modality!r} in 'acceptedModalities'.")
    media_config = data.get("mediaConfig")
    if not isinstance(media_config, dict):
        raise _bad("'mediaConfig' is required.")
    media_type = str(media_config.get("@odata.type", ""))
    if media_type.lower() not in (SERVICE_HOSTED.lower(), APP_HOSTED.lower()):
        raise _bad(
            f"'mediaConfig' @odata.type '{media_type}' is not supported; use {SERVICE_HOSTED}."
        )
    canonical = SERVICE_HOSTED if media_type.lower() == SERVICE_HOSTED.lower() else APP_HOSTED
    # GET call returns the mediaConfig the call was answered with (Get call's example).
    config: dict[str, Any] = {"@odata.type": canonical}
    if canonical == SERVICE_HOSTED:
        pre_fetch = _media_infos(media_config.get("preFetchMedia"))
        if pre_fetch:
            config["preFetchMedia"] = pre_fetch
    elif isinstance(media_config.get("blob"), str):
        config["blob"] = media_config["blob"]
    return {
        "callbackUri": callback,
        "acceptedModalities": modalities,
        "mediaConfigType": canonical,
        "mediaConfig": config,
    }
