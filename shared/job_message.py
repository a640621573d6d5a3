"""What every queue job message shares: its wire form, its trace context and its parse.

The download, transcription and event jobs are pydantic models of their own fields; this base
gives each the same ``to_message`` / ``from_message`` pair (a message that is not the job raises
the job's :class:`~shared.queue_jobs.InvalidJobMessage` naming the fields, never their values),
``with_traceparent``, and the rule that a trace context never decides a job's fate. The base
declares no field, so each job's JSON keeps its own field order. Loaded with the first job, like
the models that use it (pydantic is not imported at indexing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from shared.queue_jobs import InvalidJobMessage
from shared.trace_context import usable_traceparent


class JobMessageModel(BaseModel):
    """A queue job message; subclasses declare ``traceparent: str | None = None`` last."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    # The job's name in log lines ("download"), how a refusal names it ("a download job"), and
    # the error a message that is not such a job raises.
    job_name: ClassVar[str]
    described: ClassVar[str]
    invalid: ClassVar[type[InvalidJobMessage]]

    if TYPE_CHECKING:
        # Declared by each job as its last field (pydantic puts a base's fields first).
        traceparent: str | None

    @field_validator("traceparent", mode="before", check_fields=False)
    @classmethod
    def _ignore_unusable_traceparent(cls, value: object, info: ValidationInfo) -> str | None:
        # A trace context is a courtesy: a malformed one is dropped, never a reason to fail a job.
        return usable_traceparent(value, job=cls.job_name, ids=info.data)

    def to_message(self) -> str:
        return self.model_dump_json()

    def with_traceparent(self, traceparent: str | None) -> Self:
        """This job carrying ``traceparent`` (unchanged when there is none)."""
        if traceparent is None or traceparent == self.traceparent:
            return self
        return self.model_copy(update={"traceparent": traceparent})

    @classmethod
    def from_message(cls, text: str | bytes) -> Self:
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            fields = sorted(
                {".".join(str(p) for p in e["loc"]) or "message" for e in error.errors()}
            )
            raise cls.invalid(f"not {cls.described}: invalid {', '.join(fields)}") from None
