"""Request and response schemas of metering."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from billfold.core.schemas import Request
from billfold.metering import IngestResult


class RejectionOut(BaseModel):
    index: int
    error: dict[str, str | None]


class IngestOut(BaseModel):
    object: Literal["ingestion"] = "ingestion"
    accepted: int
    duplicates: int
    rejected: list[RejectionOut]
    charges: list[str]

    @classmethod
    def of(cls, result: IngestResult) -> IngestOut:
        return cls(
            accepted=result.accepted,
            duplicates=result.duplicates,
            charges=result.charges,
            rejected=[
                RejectionOut(
                    index=r.index,
                    error={
                        "type": "not_found" if r.code.endswith("_not_found") else "invalid_request",
                        "code": r.code,
                        "message": r.message,
                        "param": r.param,
                    },
                )
                for r in result.rejected
            ],
        )


class DefaultPlanSet(Request):
    plan: Annotated[str | None, Field(max_length=64)]
