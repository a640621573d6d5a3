"""Who called: a call's metadata as the ledger keeps it, and the caller's key for erasure.

Graph describes the caller as the incoming call's ``source`` (a ``participantInfo`` whose
``identity`` is a ``communicationsIdentitySet``: ``user``, ``phone``, ``guest``,
``azureCommunicationServicesUser``, ``applicationInstance``...), the number or account called
as its ``targets``, and a call that reached the bot through someone else in its
``incomingContext`` (``onBehalfOf``: whom the call is for, e.g. the call queue's resource
account the caller dialled; ``transferor``: who transferred it, e.g. the agent who took the call
first). This module turns those into ledger columns once, under
the ``CALLER_IDENTITY`` privacy setting, so no other module reads Graph's identity shapes or
decides what may be kept. Plain Python: no Azure SDK, no I/O.

Identity lives in the ledger only (never in blob metadata or index tags) and follows the
recording's retention: the ``expired`` and ``erased`` writes clear :data:`IDENTITY_COLUMNS`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from shared.graph.ids import normalize_id

Privacy = Literal["full", "masked", "none"]

# communicationsIdentitySet members (Graph v1.0), most specific first: a PSTN caller through a
# resource account carries ``phone``; a Teams user ``user``; a resource account alone (a call
# queue, an auto attendant) ``applicationInstance``. ``acsUser`` is the beta name of
# ``azureCommunicationServicesUser``. ``assertedIdentity`` (whom the caller presents as) is not
# who called, and is not read.
_IDENTITY_KINDS = (
    "phone",
    "guest",
    "azureCommunicationServicesUser",
    "acsUser",
    "onPremises",
    "user",
    "encrypted",
    "applicationInstance",
    "application",
    "device",
)
_E164 = re.compile(r"\+[1-9][0-9]{5,14}")
# Digits a masked number keeps (the rest become "*").
MASKED_DIGITS = 4
CALLER_PARTITION_PREFIX = "~caller~"


class IdentityColumn:
    """Ledger columns of a call's metadata (PascalCase, as Table Storage shows them)."""

    CALLER_KIND = "CallerKind"
    CALLER_ID = "CallerId"
    CALLER_NAME = "CallerDisplayName"
    CALLER_PHONE = "CallerPhone"
    CALLER_TENANT_ID = "CallerTenantId"
    # The caller's erasure key (a digest): storage internals, not shown by the API.
    CALLER_KEY = "CallerKey"
    # The incoming call's ``incomingContext``: whom the call is for and who transferred it. Either
    # may be a person (a delegate's boss, the agent who transferred the call): kept and cleared
    # like the caller.
    ON_BEHALF_OF_KIND = "OnBehalfOfKind"
    ON_BEHALF_OF_ID = "OnBehalfOfId"
    ON_BEHALF_OF_NAME = "OnBehalfOfDisplayName"
    TRANSFEROR_KIND = "TransferorKind"
    TRANSFEROR_ID = "TransferorId"
    TRANSFEROR_NAME = "TransferorDisplayName"
    CALLED_KIND = "CalledKind"
    CALLED_ID = "CalledId"
    CALLED_NAME = "CalledDisplayName"
    CALLED_PHONE = "CalledPhone"
    DIRECTION = "CallDirection"
    CHAIN_ID = "CallChainId"
    CALL_TENANT_ID = "CallTenantId"
    ANSWERED_AT = "AnsweredAt"
    PRIVACY = "CallerPrivacy"
    # Where the metadata came from: the incoming call's notification, GET /communications/calls
    # (a call the bot did not answer), or nowhere ("unknown").
    SOURCE = "CallMetadataSource"


IDENTITY_COLUMNS = (
    IdentityColumn.CALLER_KIND,
    IdentityColumn.CALLER_ID,
    IdentityColumn.CALLER_NAME,
    IdentityColumn.CALLER_PHONE,
    IdentityColumn.CALLER_TENANT_ID,
    IdentityColumn.CALLER_KEY,
    IdentityColumn.ON_BEHALF_OF_KIND,
    IdentityColumn.ON_BEHALF_OF_ID,
    IdentityColumn.ON_BEHALF_OF_NAME,
    IdentityColumn.TRANSFEROR_KIND,
    IdentityColumn.TRANSFEROR_ID,
    IdentityColumn.TRANSFEROR_NAME,
)
"""Who the call names (its caller, and whom it was for or who transferred it): cleared (written
empty) with ``expired`` and ``erased``. Kept only where the caller's kind is (``full``,
``masked``), so the ledger horizon's query for rows naming a caller finds every such row."""

CALL_COLUMNS = (
    *IDENTITY_COLUMNS,
    IdentityColumn.CALLED_KIND,
    IdentityColumn.CALLED_ID,
    IdentityColumn.CALLED_NAME,
    IdentityColumn.CALLED_PHONE,
    IdentityColumn.DIRECTION,
    IdentityColumn.CHAIN_ID,
    IdentityColumn.CALL_TENANT_ID,
    IdentityColumn.ANSWERED_AT,
    IdentityColumn.PRIVACY,
    IdentityColumn.SOURCE,
)
"""Every call metadata column: copied from the call's row onto each of its recordings."""


def cleared_identity(fields: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The merge that removes a caller's identity from a row (Tables merges cannot drop columns):
    every identity column, or only those ``fields`` (the row as read) holds a value in."""
    names = [n for n in IDENTITY_COLUMNS if fields is None or fields.get(n) not in (None, "")]
    return dict.fromkeys(names, "")


def canonical_caller(value: str) -> str | None:
    """A caller as an operator names one (a Teams/guest/ACS id, or an E.164 number), in the
    form its key is made of; None when it is neither."""
    text = value.strip()
    digits = re.sub(r"[\s\-().]", "", text)
    if digits.startswith("+") or digits.isdigit():
        number = digits if digits.startswith("+") else "+" + digits
        return number if _E164.fullmatch(number) else None
    if not text or len(text) > 256 or any(ord(c) < 32 for c in text):
        return None
    return normalize_id(text).lower()


def caller_key(canonical: str) -> str:
    """The caller's erasure key: a digest, so the caller index's keys carry no number in clear."""
    return hashlib.sha256(b"caller\0" + canonical.encode()).hexdigest()[:40]


def caller_partition(key: str) -> str:
    """The caller index partition: one row per call of that caller (shared/ledger/index.py)."""
    return CALLER_PARTITION_PREFIX + key


@dataclass(frozen=True)
class Party:
    """One side of a call as an ``identitySet`` names it."""

    kind: str  # a member of _IDENTITY_KINDS, or anonymous, unknown
    id: str | None = None
    display_name: str | None = None
    tenant_id: str | None = None
    phone: str | None = None

    @property
    def erasure_name(self) -> str | None:
        """What an operator erases this caller by: the number, else the id."""
        return canonical_caller(self.phone or self.id or "") if (self.phone or self.id) else None


# What a PSTN caller's number says when it was withheld: no one to recognise, nobody to erase by.
_WITHHELD_NUMBERS = frozenset({"anonymous", "unavailable", "restricted", "private"})


def party_of(info: Mapping[str, Any] | None) -> Party:
    """A ``participantInfo`` (or a bare ``identitySet``) as a :class:`Party`."""
    if not isinstance(info, Mapping):
        return Party("unknown")
    identity_set = info.get("identity") if "identity" in info else info
    if not isinstance(identity_set, Mapping):
        return Party("unknown")
    for kind in _IDENTITY_KINDS:
        member = identity_set.get(kind)
        if not isinstance(member, Mapping):
            continue
        ident = _text(member.get("id"))
        name = _text(member.get("displayName"))
        tenant = _text(member.get("tenantId"))
        if kind == "phone":
            # A withheld number: Graph sends the phone member without an id (or "anonymous").
            if ident is None or ident.lower() in _WITHHELD_NUMBERS:
                return Party("anonymous", display_name=name)
            number = canonical_caller(ident)
            if number is None or not number.startswith("+"):
                # Not the E.164 number Graph documents: kept as sent (and masked as a number),
                # not taken for a withheld one.
                return Party("phone", id=ident, display_name=name, phone=ident)
            return Party("phone", id=number, display_name=name, phone=number)
        return Party(kind, id=ident, display_name=name, tenant_id=tenant)
    return Party("anonymous" if identity_set else "unknown")


def _text(value: Any) -> str | None:
    return value.strip()[:256] if isinstance(value, str) and value.strip() else None


def mask_phone(number: str) -> str:
    """``+33612345678`` → ``+*******5678``: enough to recognise, not to call back."""
    prefix = "+" if number.startswith("+") else ""
    hidden = len(number) - len(prefix) - MASKED_DIGITS
    return prefix + "*" * max(hidden, 0) + number[-MASKED_DIGITS:]


def call_metadata_columns(
    call: Mapping[str, Any],
    *,
    privacy: Privacy,
    source: str,
    answered_at: datetime | None = None,
) -> dict[str, Any]:
    """The ledger columns of a call's metadata under ``privacy`` (``call``: Graph's JSON call
    resource, camelCase, as a notification or ``GET /communications/calls/{id}`` gives it)."""
    caller = party_of(call.get("source"))
    targets = call.get("targets")
    called = party_of(targets[0] if isinstance(targets, list) and targets else None)
    columns: dict[str, Any] = {
        IdentityColumn.PRIVACY: privacy,
        IdentityColumn.SOURCE: source,
        IdentityColumn.DIRECTION: _text(call.get("direction")),
        IdentityColumn.CHAIN_ID: _text(call.get("callChainId")),
        IdentityColumn.CALL_TENANT_ID: _text(call.get("tenantId")),
        IdentityColumn.ANSWERED_AT: answered_at,
        IdentityColumn.CALLED_KIND: called.kind,
        IdentityColumn.CALLED_ID: called.id,
        IdentityColumn.CALLED_NAME: called.display_name,
        IdentityColumn.CALLED_PHONE: called.phone,
    }
    if privacy == "none":
        return {name: value for name, value in columns.items() if value is not None}
    erasure_name = caller.erasure_name
    columns |= {
        IdentityColumn.CALLER_KIND: caller.kind,
        IdentityColumn.CALLER_TENANT_ID: caller.tenant_id,
        IdentityColumn.CALLER_KEY: caller_key(erasure_name) if erasure_name else None,
    }
    if privacy == "full":
        columns |= {
            IdentityColumn.CALLER_ID: caller.id,
            IdentityColumn.CALLER_NAME: caller.display_name,
            IdentityColumn.CALLER_PHONE: caller.phone,
        }
    else:  # masked: ids without display names, the number's last digits
        columns |= {
            IdentityColumn.CALLER_ID: None if caller.phone else caller.id,
            IdentityColumn.CALLER_PHONE: mask_phone(caller.phone) if caller.phone else None,
        }
    context = call.get("incomingContext")
    if isinstance(context, Mapping):
        columns |= _context_party_columns(context.get("onBehalfOf"), _ON_BEHALF_OF, privacy)
        columns |= _context_party_columns(context.get("transferor"), _TRANSFEROR, privacy)
    return {name: value for name, value in columns.items() if value is not None}


# (kind, id, display name) columns of each ``incomingContext`` party.
_ON_BEHALF_OF = (
    IdentityColumn.ON_BEHALF_OF_KIND,
    IdentityColumn.ON_BEHALF_OF_ID,
    IdentityColumn.ON_BEHALF_OF_NAME,
)
_TRANSFEROR = (
    IdentityColumn.TRANSFEROR_KIND,
    IdentityColumn.TRANSFEROR_ID,
    IdentityColumn.TRANSFEROR_NAME,
)


def _context_party_columns(
    identity_set: Any, names: tuple[str, str, str], privacy: Privacy
) -> dict[str, Any]:
    """One ``incomingContext`` party (an ``identitySet``; absent: nothing) as the caller is kept
    under ``privacy`` (never ``none``: the caller's branch returned before): ``full`` its kind, id
    and display name; ``masked`` no display name and a number's last digits."""
    if not isinstance(identity_set, Mapping):
        return {}
    party = party_of(identity_set)
    kind, ident, name = names
    if privacy == "masked":
        return {kind: party.kind, ident: mask_phone(party.phone) if party.phone else party.id}
    return {kind: party.kind, ident: party.id, name: party.display_name}


def unknown_call_columns(privacy: Privacy) -> dict[str, Any]:
    """A call whose metadata could not be had (not answered here, and Graph did not say)."""
    return {
        IdentityColumn.PRIVACY: privacy,
        IdentityColumn.SOURCE: "unknown",
        IdentityColumn.CALLER_KIND: "unknown",
    }


def call_view(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The status API's ``caller``/``called``/``call`` objects from a row's columns (``call``
    holds the ``incomingContext`` parties: ``onBehalfOf``, ``transferor``); empty values (never
    captured, or cleared with expiry or erasure) are left out."""

    def pick(pairs: tuple[tuple[str, str], ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, column in pairs:
            value = fields.get(column)
            if value not in (None, ""):
                out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out

    caller = pick(
        (
            ("kind", IdentityColumn.CALLER_KIND),
            ("id", IdentityColumn.CALLER_ID),
            ("displayName", IdentityColumn.CALLER_NAME),
            ("phone", IdentityColumn.CALLER_PHONE),
            ("tenantId", IdentityColumn.CALLER_TENANT_ID),
        )
    )
    called = pick(
        (
            ("kind", IdentityColumn.CALLED_KIND),
            ("id", IdentityColumn.CALLED_ID),
            ("displayName", IdentityColumn.CALLED_NAME),
            ("phone", IdentityColumn.CALLED_PHONE),
        )
    )
    call = pick(
        (
            ("direction", IdentityColumn.DIRECTION),
            ("callChainId", IdentityColumn.CHAIN_ID),
            ("tenantId", IdentityColumn.CALL_TENANT_ID),
            ("answeredAt", IdentityColumn.ANSWERED_AT),
            ("callerPrivacy", IdentityColumn.PRIVACY),
            ("metadataSource", IdentityColumn.SOURCE),
        )
    )
    for key, (kind, ident, name) in (("onBehalfOf", _ON_BEHALF_OF), ("transferor", _TRANSFEROR)):
        party = pick((("kind", kind), ("id", ident), ("displayName", name)))
        if party:
            call[key] = party
    view: dict[str, Any] = {}
    if caller:
        view["caller"] = caller
    if called:
        view["called"] = called
    if call:
        view["call"] = call
    return view
