"""The staged training loop: members train as they would alone, clipped alone, and fail alone."""

from __future__ import annotations

import math

import pytest
import torch

from suite.train.loop import Stage, StepInfo, backward_finite, clip_per_member_, constant, train
from suite.train.schedule import warmup_cosine

TARGET = torch.tensor([[1.0, -2.0], [3.0, 0.5], [-1.0, 4.0]], dtype=torch.float64)


def quadratic(w: torch.Tensor, poison: dict[int, int] | None = None, target: torch.Tensor | None = None):
    """Per member: |w_m - target_m|^2; ``poison`` {member: step} makes that member's loss NaN from that step on."""
    target = TARGET[:w.shape[0]] if target is None else target

    def loss_and_grad(step: int, active: torch.Tensor) -> torch.Tensor:
        per = (w - target).square().sum(1)
        for member, at in (poison or {}).items():
            if step >= at:
                per = per.clone()
                per[member] = per[member] * math.nan
        return backward_finite(per)
    return loss_and_grad


def sgd(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr)


def test_clipping_is_per_member() -> None:
    w = torch.zeros(3, 2, requires_grad=True)
    w.grad = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])  # norms 5, 0.5, 0
    norm = clip_per_member_([w], 1.0)
    torch.testing.assert_close(norm, torch.tensor([5.0, 0.5, 0.0]))
    # The large one scaled to norm 1, the small and the zero ones untouched (a shared clip would scale all).
    torch.testing.assert_close(w.grad, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]), atol=1e-6, rtol=0)


def test_a_member_with_a_non_finite_gradient_takes_no_step_and_the_others_do() -> None:
    w = torch.zeros(2, 2, requires_grad=True)
    w.grad = torch.tensor([[math.nan, 1.0], [1.0, 1.0]])
    clip_per_member_([w], None)
    assert w.grad.tolist() == [[0.0, 0.0], [1.0, 1.0]]


def test_each_member_trains_exactly_as_it_would_alone() -> None:
    w = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    train([w], [Stage("s", 20, 0.5, quadratic(w), clip=1.0)])
    for m in range(3):
        alone = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
        train([alone], [Stage("s", 20, 0.5, quadratic(alone, target=TARGET[m:m + 1]), clip=1.0)])
        assert torch.equal(alone[0], w[m])


def test_a_diverged_member_is_frozen_on_its_best_weights_while_the_others_train_on() -> None:
    w = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    seen: list[StepInfo] = []
    out = train([w], [Stage("s", 60, 0.1, quadratic(w, poison={1: 5}))], optimizer=sgd, hook=seen.append)
    assert out.diverged_at.tolist() == [-1, 5, -1] and out.frozen.tolist() == [False, True, False]
    # Member 1 sits where it was at step 4 (its best: the loss only fell until then), with finite weights.
    w1 = torch.zeros(2, dtype=torch.float64)
    for _ in range(4):  # the weights step 4's loss was computed on
        w1 = w1 - 0.1 * 2 * (w1 - TARGET[1])
    torch.testing.assert_close(w[1].detach(), w1, rtol=0, atol=1e-12)
    assert out.best[0][1] == pytest.approx(float((w1 - TARGET[1]).square().sum()))
    # The others converge as if nothing happened.
    torch.testing.assert_close(w[[0, 2]].detach(), TARGET[[0, 2]], rtol=0, atol=1e-4)
    assert [bool(i.active[1]) for i in seen] == [True] * 5 + [False] * 55


def test_adam_moments_do_not_move_a_frozen_member() -> None:
    """Adam keeps stepping on its moments with a zero gradient: the loop puts a frozen member back each step."""
    w = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    out = train([w], [Stage("s", 20, 0.1, quadratic(w, poison={0: 8}))])
    assert out.diverged_at.tolist() == [8, -1]
    assert torch.equal(w[0].detach(), out.best_params[0][0])
    assert float((w[0] - TARGET[0]).detach().square().sum()) == out.best[0][0]


def test_skip_gives_a_member_no_step_only_while_its_loss_is_non_finite() -> None:
    w = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)

    def flaky(step: int, active: torch.Tensor) -> torch.Tensor:
        per = (w - TARGET[:2]).square().sum(1)
        if step == 3:
            per = per * torch.tensor([math.nan, 1.0], dtype=torch.float64)
        return backward_finite(per)

    out = train([w], [Stage("s", 200, 0.1, flaky)], optimizer=sgd, on_nonfinite="skip")
    assert out.diverged_at.tolist() == [3, -1] and not out.frozen.any()
    torch.testing.assert_close(w.detach(), TARGET[:2], rtol=0, atol=1e-8)  # member 0 trained on after step 3


def test_the_schedule_sets_every_steps_learning_rate_and_each_stage_starts_fresh() -> None:
    w = torch.zeros(1, 2, requires_grad=True)
    seen: list[float] = []
    optimisers: list[torch.optim.Optimizer] = []

    def make(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
        optimisers.append(torch.optim.SGD(params, lr=lr))
        return optimisers[-1]

    def loss(_: int, __: torch.Tensor) -> torch.Tensor:
        seen.append(optimisers[-1].param_groups[0]["lr"])
        return backward_finite((w - 1.0).square().sum(1))

    cosine = lambda n, lr: warmup_cosine(n, lr, 2, 0.1 * lr)  # noqa: E731
    out = train([w], [Stage("a", 10, 0.5, loss, cosine), Stage("b", 0, 9.0, loss), Stage("c", 3, 0.2, loss)],
                optimizer=make)
    assert seen == warmup_cosine(10, 0.5, 2, 0.05) + constant(3, 0.2)
    assert len(optimisers) == 2 and out.steps == 13 and len(out.best) == len(out.stage_wall_s) == 2


def test_end_on_best_returns_every_member_to_its_best_weights() -> None:
    """A step size that overshoots makes the last weights worse than the first: end_on_best keeps the first."""
    w = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    out = train([w], [Stage("s", 5, 1.5, quadratic(w))], optimizer=sgd, end_on_best=True)
    assert torch.equal(w.detach(), torch.zeros(2, 2, dtype=torch.float64))  # step 0's weights were the best
    torch.testing.assert_close(out.best[0], TARGET[:2].square().sum(1))
    kept = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    train([kept], [Stage("s", 5, 1.5, quadratic(kept))], optimizer=sgd)
    assert (kept.detach() != 0).all()


def test_check_every_keeps_best_weights_only_at_checked_steps() -> None:
    w = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    target = TARGET[:1]
    out = train([w], [Stage("s", 7, 0.1, lambda _, __: backward_finite((w - target).square().sum(1)))],
                optimizer=sgd, check_every=3)
    w6 = torch.zeros(2, dtype=torch.float64)
    for _ in range(6):
        w6 = w6 - 0.1 * 2 * (w6 - target[0])
    torch.testing.assert_close(out.best_params[0][0], w6, rtol=0, atol=1e-12)  # step 6's, not step 7's


def test_bad_arguments_are_refused() -> None:
    w = torch.zeros(2, 2, requires_grad=True)
    with pytest.raises(ValueError, match="on_nonfinite"):
        train([w], [], on_nonfinite="ignore")
    with pytest.raises(ValueError, match="leading dimension"):
        train([w, torch.zeros(3, requires_grad=True)], [])


def test_parameters_of_any_rank_are_clipped_per_member() -> None:
    bias = torch.zeros(2, requires_grad=True)
    weight = torch.zeros(2, 1, 2, requires_grad=True)
    bias.grad = torch.tensor([3.0, 0.0])
    weight.grad = torch.tensor([[[4.0, 0.0]], [[0.0, 0.1]]])
    torch.testing.assert_close(clip_per_member_([bias, weight], 1.0), torch.tensor([5.0, 0.1]))
    torch.testing.assert_close(bias.grad, torch.tensor([0.6, 0.0]), atol=1e-6, rtol=0)


def test_a_huge_but_finite_gradient_still_steps_without_a_clip() -> None:
    """Its square overflows float32; the member is not taken for one with a non-finite gradient."""
    w = torch.zeros(2, 1, requires_grad=True)
    w.grad = torch.tensor([[1e30], [1.0]])
    before = w.grad.clone()
    assert clip_per_member_([w], None) is None
    assert torch.equal(w.grad, before)
