"""What every queue job message shares: its wire form, its trace context and its parse.

The download, transcription and event jobs share their first fields (``version``, ``call_id``,
``operation_id``), their last (``traceparent``), the same ``to_message`` / ``from_message`` pair
(a message that is not the job raises the job's :class:`~shared.queue_jobs.InvalidJobMessage`
naming the fields, never their values), ``with_traceparent``, and the rule that a trace context
never decides a job's fate. Each job declares only the fields between. Loaded with the first job,
like the models that use it (pydantic is not imported at indexing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from shared.queue_jobs import InvalidJobMessage
from shared.trace_context import usable_traceparent


@dataclass(frozen=True)
class MessageKind:
    """A job's name in log lines ("download"), how a refusal names it ("a download job"), and
    the error a message that is not such a job raises."""

    name: str
    described: str
    invalid: type[InvalidJobMessage]


class JobMessageModel(BaseModel):
    """A queue job message; subclasses declare ``traceparent: str | None = None`` last."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    kind: ClassVar[MessageKind]

    # Pydantic puts a base's fields first: these three lead every job's JSON, as they always did.
    version: Literal[1] = 1
    call_id: str = Field(min_length=1)
    operation_id: str = Field(min_length=1)

    if TYPE_CHECKING:
        # Declared by each job as its last field.
        traceparent: str | None

    @field_validator("traceparent", mode="before", check_fields=False)
    @classmethod
    def _ignore_unusable_traceparent(cls, value: object, info: ValidationInfo) -> str | None:
        # A trace context is a courtesy: a malformed one is dropped, never a reason to fail a job.
        return usable_traceparent(value, job=cls.kind.name, ids=info.data)

    def to_message(self) -> str:
        return self.model_dump_json()

    def with_traceparent(self, traceparent: str | None) -> Self:
        """This job carrying ``traceparent`` (unchanged when there is none)."""
        if traceparent is None or traceparent == self.traceparent:
            return self
        return self.model_copy(update={"traceparent": traceparent})

    def log_fields(self) -> dict[str, Any]:
        """What a log line may say about the job (no token, no full URL query)."""
        return {"call_id": self.call_id, "operation_id": self.operation_id}

    @classmethod
    def from_message(cls, text: str | bytes) -> Self:
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            fields = sorted(
                {".".join(str(p) for p in e["loc"]) or "message" for e in error.errors()}
            )
            raise cls.kind.invalid(
                f"not {cls.kind.described}: invalid {', '.join(fields)}"
            ) from None
