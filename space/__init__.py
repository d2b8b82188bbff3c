"""Study files: search space, parameter budget, sampler and pruner."""

from __future__ import annotations

from space.dims import Dim, SpecError
from space.sampler import BudgetAwareSampler, make_pruner, make_sampler
from space.spec import Candidate, OverBudget, StudySpec, builtin_studies, load_spec

__all__ = [
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
