"""The named baselines against the papers: counts within 2% of the published figure (or a
stated reason), equal to an independent implementation's exact count, and PyramidNet's
widths as the paper's code computes them."""

from __future__ import annotations

import pytest

from models import BASELINES, count_params
from models.baselines import PAPERS, reference_difference
from models.plan import sites

ISSUE_14 = ("wrn-40-2", "wrn-22-4", "pyramidnet-110-a48", "pyramidnet-110-a84",
            "pyramidnet-164-a48", "pyramidnet-164-a84", "shake-shake-26-2x32d",
            "preact-resnet-164", "se-resnet-164")


def test_the_baselines_of_the_winning_families_are_registered_with_their_papers() -> None:
    for name in ISSUE_14:
        assert name in BASELINES and name in PAPERS, name
    assert count_params(BASELINES["resnet-443"]) == 4_697_162  # the seed design stays


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_each_count_is_within_2_percent_of_the_paper_or_says_why(name: str) -> None:
    paper, ours = PAPERS[name], count_params(BASELINES[name])
    if paper.params is None or abs(ours / paper.params - 1) > 0.02:
        assert paper.note, f"{name}: {ours:,} against the paper's {paper.params} needs a note"
    assert paper.accuracy and paper.source


@pytest.mark.parametrize("name", sorted(n for n, p in PAPERS.items() if p.reference_params))
def test_each_count_equals_the_reference_implementation_up_to_the_stated_difference(
        name: str) -> None:
    arch = BASELINES[name]
    reference = PAPERS[name].reference_params
    assert reference is not None
    assert count_params(arch) - reference == reference_difference(arch)


@pytest.mark.parametrize(("name", "alpha", "expansion"), [
    ("pyramidnet-110-a48", 48, 1), ("pyramidnet-110-a84", 84, 1),
    ("pyramidnet-164-a48", 48, 4), ("pyramidnet-164-a84", 84, 4)])
def test_pyramidnet_widens_by_alpha_over_n_at_every_block(name: str, alpha: int,
                                                          expansion: int) -> None:
    # As the paper's code does it: a float that grows by alpha / N, rounded per block.
    blocks = list(sites(BASELINES[name]))
    width, paper = 16.0, []
    for _ in blocks:
        width += alpha / len(blocks)
        paper.append(round(width) * expansion)
    assert [b.c_out for b in blocks] == paper
    assert [b.c_in for b in blocks[1:]] == paper[:-1] and blocks[0].c_in == 16
