"""Graded arrears of prepaid debt: grace, suspension, termination, each step announced."""

from billfold.arrears.service import review

__all__ = ["review"]
