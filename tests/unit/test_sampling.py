"""Token choice at the head: greedy is argmax; filters and seeds behave."""

from __future__ import annotations

import pytest
import torch

from resplit.models.sampling import Sampler


def test_greedy_is_argmax_with_its_logprob():
    logits = torch.tensor([0.1, 2.0, -1.0, 1.9])
    token, logprob = Sampler().choose(logits)
    assert token == 1
    assert logprob == pytest.approx(torch.log_softmax(logits, -1)[1].item())


def test_top_k_one_is_greedy_whatever_the_temperature():
    logits = torch.randn(50)
    sampler = Sampler(temperature=5.0, top_k=1, seed=3)
    assert {sampler.choose(logits, i)[0] for i in range(20)} == {int(logits.argmax())}


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    sampler = Sampler(temperature=1.0, top_p=0.7, seed=0)
    drawn = {sampler.choose(logits, i)[0] for i in range(300)}
    assert drawn == {0, 1}


def _draws(seed: int, count: int = 10) -> list[int]:
    sampler = Sampler(temperature=1.0, seed=seed)
    return [sampler.choose(torch.zeros(1000), i)[0] for i in range(count)]


def test_same_seed_same_draws_other_seed_other_draws():
    assert _draws(7) == _draws(7)
    assert _draws(7) != _draws(8)


def test_finish_reasons():
    sampler = Sampler(stop_token_ids=frozenset({2}), max_new_tokens=3)
    assert sampler.finish_reason(5, 1) == ""
    assert sampler.finish_reason(2, 1) == "stop_token"
    assert sampler.finish_reason(5, 3) == "max_new_tokens"


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"temperature": -1}, "temperature"), ({"top_p": 1.5}, "top_p")]
)
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sampler(**kwargs)


def test_a_draw_depends_only_on_seed_and_index():
    """A session resumed elsewhere at token i draws what it would have drawn."""
    logits = torch.zeros(1000)
    first, resumed = Sampler(temperature=1.0, seed=5), Sampler(temperature=1.0, seed=5)
    run = [first.choose(logits, i)[0] for i in range(6)]
    assert [resumed.choose(logits, i)[0] for i in range(3, 6)] == run[3:]
    assert len(set(run)) > 1
