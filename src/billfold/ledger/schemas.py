"""Request and response schemas of ledger."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from billfold.ledger.verify import Report


class CheckOut(BaseModel):
    name: str
    description: str
    ok: bool
    problem_count: int
    problems: list[str]


class VerifyOut(BaseModel):
    object: Literal["ledger_verification"] = "ledger_verification"
    ok: bool
    transfers: int
    postings: int
    accounts: int
    checks: list[CheckOut]

    @classmethod
    def of(cls, report: Report) -> VerifyOut:
        return cls(
            ok=report.ok,
            transfers=report.transfers,
            postings=report.postings,
            accounts=report.accounts,
            checks=[
                CheckOut(
                    name=c.name,
                    description=c.description,
                    ok=c.ok,
                    problem_count=c.problem_count,
                    problems=c.problems,
                )
                for c in report.checks
            ],
        )
