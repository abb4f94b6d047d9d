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


def test_draws_follow_the_distribution_and_report_its_logprob():
    """The inverse-CDF draw: over 4,000 seeded draws each token comes up at its probability
    (within 0.03), and each draw's log-probability is its own under the tempered softmax."""
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2, 0.0]))
    sampler = Sampler(temperature=1.0, seed=11)
    counts = torch.zeros(4)
    for i in range(4000):
        token, logprob = sampler.choose(logits, i)
        counts[token] += 1
        assert logprob == pytest.approx(float(torch.log_softmax(logits, -1)[token]), abs=1e-6)
    assert counts[3] == 0  # probability zero: never drawn
    assert torch.allclose(counts / 4000, torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.03), counts


@pytest.mark.parametrize("uniform", [0.0, 1.0 - 2.0**-53])
def test_the_extreme_uniform_numbers_never_draw_a_filtered_token(monkeypatch, uniform):
    """At u = 0 the first kept token, at the largest u below 1 the last kept one: neither the
    filtered token before them nor the filtered tail after them, whatever the rounding."""
    logits = torch.tensor([0.3, 3.0, 1.0, 2.0, 0.5, 0.4])  # top-3 keeps 1, 2 and 3
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: real_rand(*a, **k) * 0 + uniform)
    token, _ = Sampler(temperature=1.0, top_k=3, seed=1).choose(logits)
    assert token == (1 if uniform == 0.0 else 3)


def test_bfloat16_logits_are_chosen_from_as_float():
    logits = torch.tensor([0.1, 2.0, -1.0, 1.9], dtype=torch.bfloat16)
    assert Sampler().choose(logits)[0] == 1
    assert Sampler(temperature=0.5, top_k=1, seed=2).choose(logits)[0] == 1
