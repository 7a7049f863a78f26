"""Each bug-zoo exhibit fails the check that lossbook passes: the checks can fail."""

import pytest

from lossbook import bugzoo, fixed_cross_entropy
from lossbook.checks import compare_losses, cross_entropy_cases

BUGS = [bugzoo.scores_the_padding, bugzoo.cross_entropy_of_probabilities, bugzoo.mean_of_means, bugzoo.log_of_softmax]


@pytest.mark.parametrize("bug", BUGS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_bug_fails_against_lossbook(bug, seed):
    result = compare_losses(bug, fixed_cross_entropy, cross_entropy_cases(seed))
    assert not result.passed, result


def test_lossbook_passes_against_transformers(hf_loss_utils):
    result = compare_losses(fixed_cross_entropy, hf_loss_utils.fixed_cross_entropy, cross_entropy_cases(0))
    assert result.passed, result


def test_log_of_softmax_fails_only_at_extreme_logits():
    mild = compare_losses(bugzoo.log_of_softmax, fixed_cross_entropy, cross_entropy_cases(0, extreme=False), atol=1e-5)
    extreme = compare_losses(bugzoo.log_of_softmax, fixed_cross_entropy, cross_entropy_cases(0), atol=1e-5)
    assert mild.passed and not extreme.passed
