"""Study files: search space, parameter budget, sampler and pruner."""

from __future__ import annotations

from space.dims import Dim, SpecError
from space.sampler import Budget, BudgetAwareSampler
from space.spec import (
    Candidate,
    OverBudget,
    StudySpec,
    builtin_studies,
    load_spec,
    make_pruner,
    make_sampler,
)

__all__ = [
    "Budget",
    "BudgetAwareSampler",
    "Candidate",
    "Dim",
    "OverBudget",
    "SpecError",
    "StudySpec",
    "builtin_studies",
    "load_spec",
    "make_pruner",
    "make_sampler",
]
