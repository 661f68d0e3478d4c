"""The jobs that run after a response: what they carry, and nothing that runs them.

Kept apart from `background_jobs` (which dispatches them to the summarizer and the
speech service) so the services can name a job without importing their dispatcher.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter


class SummaryJob(BaseModel):
    kind: Literal["summary"] = "summary"
    session_id: str


class SpeechJob(BaseModel):
    """Speak `text` into the reserved audio file `file_id`."""

    kind: Literal["speech"] = "speech"
    file_id: str
    text: str
    voice_id: str
    speed: float = 1.0
    language: str | None = None
    streaming_mode: int = 0


Job = Annotated[SummaryJob | SpeechJob, Field(discriminator="kind")]
JOB: TypeAdapter[SummaryJob | SpeechJob] = TypeAdapter(Job)
