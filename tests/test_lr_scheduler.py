"""Learning-rate schedules against torch.optim.lr_scheduler: the same lr, bit for bit, per epoch."""

import json
import math
import warnings

import numpy as np
import pytest
import torch

from numcnn import optim
from numcnn.nn import Parameter
from numcnn.optim import lr_scheduler

LRS = (0.1, 0.03)  # two parameter groups with their own learning rates


def optimizers(lrs=LRS):
    """A numcnn SGD and a torch SGD, each with one group per learning rate."""
    ours = optim.SGD([{"params": [Parameter(np.zeros(2))], "lr": lr} for lr in lrs], lr=1.0)
    theirs = torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)], "lr": lr}
                              for lr in lrs], lr=1.0)
    return ours, theirs


def lrs_of(optimizer):
    return [group["lr"] for group in optimizer.param_groups]


def run_schedules(name, kwargs, epochs, lrs=LRS):
    """Step both schedules ``epochs`` times (after an optimizer step), asserting equal lrs."""
    ours, theirs = optimizers(lrs)
    sched = getattr(lr_scheduler, name)(ours, **kwargs)
    ref = getattr(torch.optim.lr_scheduler, name)(theirs, **kwargs)
    assert sched.get_last_lr() == ref.get_last_lr() == lrs_of(ours)
    history = []
    for epoch in range(epochs):
        ours.step()
        theirs.step()
        sched.step()
        ref.step()
        assert sched.get_last_lr() == ref.get_last_lr(), f"epoch {epoch + 1}"
        assert lrs_of(ours) == lrs_of(theirs)
        assert sched.last_epoch == ref.last_epoch
        history.append(sched.get_last_lr()[0])
    return sched, ref, history


SCHEDULES = [
    ("StepLR", dict(step_size=1)),
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("StepLR", dict(step_size=7, gamma=0.9)),
    ("MultiStepLR", dict(milestones=[2, 5, 9, 30])),
    ("MultiStepLR", dict(milestones=[9, 2, 5, 5], gamma=0.5)),  # unsorted, 5 twice
    ("ExponentialLR", dict(gamma=0.9)),
    ("ExponentialLR", dict(gamma=0.999)),
    ("CosineAnnealingLR", dict(T_max=10)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=1e-3)),
    ("CosineAnnealingLR", dict(T_max=1, eta_min=0.01)),
]


@pytest.mark.parametrize("name, kwargs", SCHEDULES, ids=lambda x: str(x))
def test_lr_sequence_matches_torch(name, kwargs):
    run_schedules(name, kwargs, epochs=60)


def test_cosine_annealing_follows_the_closed_form():
    """Checked against the formula too, not only torch: eta_min + (base - eta_min)(1 + cos)/2."""
    _, _, history = run_schedules("CosineAnnealingLR", dict(T_max=10, eta_min=0.001), epochs=30)
    for epoch, lr in enumerate(history, start=1):
        expected = 0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * epoch / 10)) / 2
        assert lr == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_step_lr_follows_the_closed_form():
    _, _, history = run_schedules("StepLR", dict(step_size=3, gamma=0.5), epochs=12)
    assert history == pytest.approx([0.1 * 0.5 ** (e // 3) for e in range(1, 13)], rel=1e-15)


@pytest.mark.parametrize("name, kwargs", SCHEDULES, ids=lambda x: str(x))
def test_state_dict_through_json_resumes_exactly(name, kwargs):
    ours, _ = optimizers()
    sched = getattr(lr_scheduler, name)(ours, **kwargs)
    for _ in range(3):  # milestones 5 (twice) and 9 come after the resume
        ours.step()
        sched.step()
    saved_opt = ours.state_dict()
    saved = json.loads(json.dumps(sched.state_dict()))
    expected = []
    for _ in range(20):
        ours.step()
        sched.step()
        expected.append(sched.get_last_lr())

    resumed, _ = optimizers(lrs=(5.0, 5.0))
    resumed.load_state_dict(saved_opt)
    sched2 = getattr(lr_scheduler, name)(resumed, **kwargs)
    sched2.load_state_dict(saved)
    got = []
    for _ in range(20):
        resumed.step()
        sched2.step()
        got.append(sched2.get_last_lr())
    assert got == expected


@pytest.mark.parametrize("name, kwargs", SCHEDULES, ids=lambda x: str(x))
def test_loads_torch_scheduler_state_and_continues_like_torch(name, kwargs):
    ours, theirs = optimizers()
    ref = getattr(torch.optim.lr_scheduler, name)(theirs, **kwargs)
    for _ in range(6):
        theirs.step()
        ref.step()
    ours.load_state_dict({"state": {}, "param_groups": theirs.state_dict()["param_groups"]})
    sched = getattr(lr_scheduler, name)(ours, **kwargs)
    sched.load_state_dict(ref.state_dict())
    for epoch in range(25):
        ours.step()
        theirs.step()
        sched.step()
        ref.step()
        assert sched.get_last_lr() == ref.get_last_lr(), epoch


@pytest.mark.parametrize("name, kwargs", SCHEDULES, ids=lambda x: str(x))
def test_resuming_with_last_epoch_matches_torch(name, kwargs):
    ours, theirs = optimizers()
    for group in ours.param_groups + theirs.param_groups:
        group["initial_lr"] = group["lr"] * 2
    sched = getattr(lr_scheduler, name)(ours, last_epoch=4, **kwargs)
    ref = getattr(torch.optim.lr_scheduler, name)(theirs, last_epoch=4, **kwargs)
    assert sched.base_lrs == ref.base_lrs
    for epoch in range(20):
        ours.step()
        theirs.step()
        sched.step()
        ref.step()
        assert sched.get_last_lr() == ref.get_last_lr(), epoch


@pytest.mark.parametrize("name, kwargs", SCHEDULES, ids=lambda x: str(x))
def test_step_with_epoch_uses_the_closed_form_as_torch(name, kwargs):
    ours, theirs = optimizers()
    sched = getattr(lr_scheduler, name)(ours, **kwargs)
    ref = getattr(torch.optim.lr_scheduler, name)(theirs, **kwargs)
    ours.step()
    theirs.step()
    for epoch in (3, 10, 4, 25):
        with pytest.warns(UserWarning, match="deprecated"):
            sched.step(epoch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref.step(epoch)
        assert sched.get_last_lr() == ref.get_last_lr(), epoch


def test_initial_lr_recorded_and_base_lrs():
    ours, _ = optimizers()
    sched = lr_scheduler.StepLR(ours, step_size=2)
    assert sched.base_lrs == list(LRS)
    assert [g["initial_lr"] for g in ours.param_groups] == list(LRS)
    assert "initial_lr" in ours.state_dict()["param_groups"][0]


def test_scheduler_before_optimizer_step_warns_as_torch():
    ours, _ = optimizers()
    sched = lr_scheduler.StepLR(ours, step_size=2)
    with pytest.warns(UserWarning, match=r"lr_scheduler.step\(\)` before `optimizer.step\(\)"):
        sched.step()
    ours, _ = optimizers()
    sched = lr_scheduler.StepLR(ours, step_size=2)
    ours.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()
        ours.step()
        sched.step()


def test_get_last_lr_is_a_copy():
    ours, _ = optimizers()
    sched = lr_scheduler.ExponentialLR(ours, gamma=0.5)
    sched.get_last_lr()[0] = 123.0
    assert sched.get_last_lr() == list(LRS)


# -- ReduceLROnPlateau ---------------------------------------------------------------------------
def metric_sequence(seed, length=100, mode="min"):
    """A noisy loss-like curve with long plateaus and repeats, so every branch is taken."""
    rng = np.random.default_rng(seed)
    values = []
    level = 1.0
    for epoch in range(length):
        if epoch % 25 < 5:
            level *= 0.9  # improving
        noise = rng.choice([0.0, 0.0, 1e-5, -1e-5, 0.01, -0.01])
        values.append(level + noise)
    return values if mode == "min" else [-v for v in values]


PLATEAU_CONFIGS = [
    dict(),
    dict(mode="max"),
    dict(patience=0),
    dict(patience=2, cooldown=3, factor=0.5),
    dict(patience=1, threshold=0.05, threshold_mode="abs"),
    dict(mode="max", patience=1, threshold=1e-3, threshold_mode="abs", cooldown=1),
    dict(patience=1, factor=0.3, min_lr=0.005),
    dict(patience=0, factor=0.5, min_lr=[0.02, 0.001]),
    dict(patience=0, factor=0.9, eps=0.005),  # group 0 is reduced, group 1's steps are < eps
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kwargs", PLATEAU_CONFIGS, ids=lambda k: str(k))
def test_reduce_on_plateau_matches_torch(kwargs, seed):
    ours, theirs = optimizers()
    sched = lr_scheduler.ReduceLROnPlateau(ours, **kwargs)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, **kwargs)
    reductions = 0
    for epoch, metric in enumerate(metric_sequence(seed, mode=kwargs.get("mode", "min"))):
        before = sched.get_last_lr()
        sched.step(np.float64(metric) if epoch % 2 else metric)
        ref.step(metric)
        assert sched.get_last_lr() == ref.get_last_lr(), epoch
        assert lrs_of(ours) == lrs_of(theirs)
        assert (sched.best, sched.num_bad_epochs, sched.cooldown_counter, sched.last_epoch) == \
               (ref.best, ref.num_bad_epochs, ref.cooldown_counter, ref.last_epoch), epoch
        reductions += sched.get_last_lr() != before
    assert reductions > 0  # the sequence did exercise a reduction


def test_reduce_on_plateau_hand_worked_example():
    """patience=2: the lr drops after the third epoch in a row without improvement."""
    ours, _ = optimizers(lrs=(1.0,))
    sched = lr_scheduler.ReduceLROnPlateau(ours, factor=0.5, patience=2, threshold=0)
    lrs = []
    for loss in [5, 4, 4, 4, 4, 3, 3.5, 3.5, 3.5, 3.5]:
        sched.step(loss)
        lrs.append(sched.get_last_lr()[0])
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_reduce_on_plateau_skips_reductions_smaller_than_eps():
    ours, theirs = optimizers()  # lrs 0.1 and 0.03: factor 0.9 changes them by 0.01 and 0.003
    sched = lr_scheduler.ReduceLROnPlateau(ours, factor=0.9, patience=0, eps=0.005)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, factor=0.9, patience=0, eps=0.005)
    for metric in (1.0, 2.0):
        sched.step(metric)
        ref.step(metric)
    assert sched.get_last_lr() == ref.get_last_lr() == [pytest.approx(0.09, rel=1e-15), 0.03]


def test_reduce_on_plateau_state_dict_through_json_and_from_torch():
    metrics = metric_sequence(3)
    ours, theirs = optimizers()
    kwargs = dict(patience=1, cooldown=2, factor=0.5)
    sched = lr_scheduler.ReduceLROnPlateau(ours, **kwargs)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs, **kwargs)
    for metric in metrics[:30]:
        sched.step(metric)
        ref.step(metric)
    saved_optimizer = ours.state_dict()
    sources = [json.loads(json.dumps(sched.state_dict())), ref.state_dict()]
    expected = []
    for metric in metrics[30:]:
        ref.step(metric)
        expected.append(ref.get_last_lr())
    assert len(set(map(tuple, expected))) > 1  # the rest of the run does reduce

    for source in sources:
        resumed, _ = optimizers()
        resumed.load_state_dict(saved_optimizer)
        other = lr_scheduler.ReduceLROnPlateau(resumed, mode="max", factor=0.9, patience=7)
        other.load_state_dict(source)
        got = []
        for metric in metrics[30:]:
            other.step(metric)
            got.append(other.get_last_lr())
        assert got == expected


def test_fresh_plateau_state_is_json_friendly():
    ours, _ = optimizers()
    state = lr_scheduler.ReduceLROnPlateau(ours).state_dict()
    assert state["best"] == math.inf and state["mode_worse"] == math.inf
    assert json.loads(json.dumps(state))["best"] == math.inf


# -- errors --------------------------------------------------------------------------------------
def an_optimizer():
    return optimizers()[0]


@pytest.mark.parametrize("make, error, message", [
    (lambda: lr_scheduler.StepLR(an_optimizer(), step_size=0), ValueError,
     "StepLR: step_size must be a positive int, got 0"),
    (lambda: lr_scheduler.StepLR(an_optimizer(), step_size=2.5), ValueError,
     "step_size must be a positive int, got 2.5"),
    (lambda: lr_scheduler.StepLR(an_optimizer(), step_size=2, gamma=-0.1), ValueError,
     r"StepLR: gamma must be a number >= 0, got -0\.1"),
    (lambda: lr_scheduler.MultiStepLR(an_optimizer(), milestones=[3, -1]), ValueError,
     r"MultiStepLR: milestones must be ints >= 0, got \[3, -1\]"),
    (lambda: lr_scheduler.ExponentialLR(an_optimizer(), gamma=float("nan")), ValueError,
     "ExponentialLR: gamma must be a number >= 0, got nan"),
    (lambda: lr_scheduler.CosineAnnealingLR(an_optimizer(), T_max=0), ValueError,
     "CosineAnnealingLR: T_max must be a positive int, got 0"),
    (lambda: lr_scheduler.CosineAnnealingLR(an_optimizer(), T_max=5, eta_min=-1), ValueError,
     "eta_min must be a number >= 0"),
    (lambda: lr_scheduler.StepLR(an_optimizer(), step_size=2, last_epoch=-2), ValueError,
     "last_epoch must be an int >= -1, got -2"),
    (lambda: lr_scheduler.StepLR(an_optimizer(), step_size=2, last_epoch=3), KeyError,
     r"'initial_lr' is not specified in param_groups\[0\]"),
    (lambda: lr_scheduler.StepLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)]), 2),
     TypeError, "StepLR: SGD is not a numcnn Optimizer"),
    (lambda: lr_scheduler.ReduceLROnPlateau(an_optimizer(), factor=1.0), ValueError,
     r"factor should be < 1\.0"),
    (lambda: lr_scheduler.ReduceLROnPlateau(an_optimizer(), factor=-0.5), ValueError,
     "factor should be"),
    (lambda: lr_scheduler.ReduceLROnPlateau(an_optimizer(), mode="avg"), ValueError,
     "mode must be 'min' or 'max', got 'avg'"),
    (lambda: lr_scheduler.ReduceLROnPlateau(an_optimizer(), threshold_mode="pct"), ValueError,
     "threshold_mode must be 'rel' or 'abs', got 'pct'"),
    (lambda: lr_scheduler.ReduceLROnPlateau(an_optimizer(), patience=-1), ValueError,
     "patience must be an int >= 0, got -1"),
    (lambda: lr_scheduler.ReduceLROnPlateau(an_optimizer(), cooldown=1.5), ValueError,
     "cooldown must be an int >= 0"),
    (lambda: lr_scheduler.ReduceLROnPlateau(an_optimizer(), threshold=-1e-4), ValueError,
     "threshold must be a number >= 0"),
    (lambda: lr_scheduler.ReduceLROnPlateau(an_optimizer(), min_lr=[0.1]), ValueError,
     r"expected 2 min_lrs \(one per parameter group\), got 1"),
    (lambda: lr_scheduler.ReduceLROnPlateau(object()), TypeError, "is not a numcnn Optimizer"),
    (lambda: lr_scheduler.ReduceLROnPlateau(an_optimizer()).step("low"), TypeError,
     "expects the monitored metric as a number, got str"),
    (lambda: lr_scheduler.ReduceLROnPlateau(an_optimizer()).step(np.zeros(3)), TypeError,
     "expects the monitored metric as a number, got ndarray"),
    (lambda: lr_scheduler.StepLR(an_optimizer(), 2).load_state_dict({"gamma": 0.1}), KeyError,
     "missing keys"),
])
def test_bad_arguments_raise_clear_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_torch_refuses_plateau_factor_of_one_too():
    t = torch.optim.SGD([torch.zeros(1, requires_grad=True)])
    with pytest.raises(ValueError, match="Factor should be < 1.0"):
        torch.optim.lr_scheduler.ReduceLROnPlateau(t, factor=1.0)
