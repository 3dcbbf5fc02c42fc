"""Request and response schemas of metering."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from billfold.core.schemas import Request
from billfold.core.stream import StreamState
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
    charging: Literal["synchronous", "asynchronous"] = Field(
        default="synchronous",
        description="synchronous: the accepted events are charged (see charges); "
        "asynchronous: they are stored in the stream, and a worker charges them.",
    )

    @classmethod
    def of(cls, result: IngestResult, *, streamed: bool = False) -> IngestOut:
        return cls(
            charging="asynchronous" if streamed else "synchronous",
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


class ShardOut(BaseModel):
    shard: int
    pending: int = Field(description="Messages not yet delivered to a worker")
    unacknowledged: int = Field(description="Messages delivered, not yet acknowledged")
    worker: dict[str, object] | None = Field(
        description="The worker holding the shard: its database connection's pid, "
        "address and start; null when none does"
    )


class StreamOut(BaseModel):
    object: Literal["stream"] = "stream"
    name: str
    subjects: str
    replicas: int
    messages: int = Field(
        description="Messages the stream holds (charged ones too, until its max age); "
        "each is one request's events for one shard, up to 500"
    )
    bytes: int
    lag: int = Field(description="Messages acknowledged at the edge and not yet charged")
    shards: list[ShardOut]

    @classmethod
    def of(cls, state: StreamState, holders: dict[int, dict[str, Any]]) -> StreamOut:
        return cls(
            name=state.name,
            subjects=state.subjects,
            replicas=state.replicas,
            messages=state.messages,
            bytes=state.bytes,
            lag=state.lag,
            shards=[
                ShardOut(
                    shard=s.shard,
                    pending=s.pending,
                    unacknowledged=s.unacknowledged,
                    worker=holders.get(s.shard),
                )
                for s in state.shards
            ],
        )
