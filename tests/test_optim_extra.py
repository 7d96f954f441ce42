"""RMSprop, Adagrad, LinearLR / LambdaLR / OneCycleLR / SequentialLR and gradient clipping against
PyTorch, step after step; and fit's clipping and per-batch schedule."""

import itertools

import numpy as np
import pytest
import torch

from numcnn import nn, optim, train
from numcnn.errors import NumcnnError
from numcnn.nn import Parameter
from numcnn.optim import lr_scheduler

SHAPES = [(3,), (4, 5), (2, 3, 4)]
STEPS = 40


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
    return ([Parameter(a.copy()) for a in arrays],
            [torch.tensor(a.copy(), requires_grad=True) for a in arrays])


def run_optimizers(name, kwargs, dtype, steps=STEPS, seed=0):
    ours, theirs = make_params(dtype, seed)
    opt = getattr(optim, name)(ours, **kwargs)
    ref = getattr(torch.optim, name)(theirs, **kwargs)
    rng = np.random.default_rng(seed + 1)
    rtol = 1e-10 if dtype == np.float64 else 1e-4
    for step in range(steps):
        for p, t in zip(ours, theirs):
            grad = (rng.standard_normal(p.shape) * (1 + step % 3)).astype(dtype)
            p.grad = grad.copy()
            t.grad = torch.tensor(grad.copy())
        opt.step()
        ref.step()
        for p, t in zip(ours, theirs):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=rtol, atol=rtol,
                                       err_msg=f"step {step + 1}")
            assert p.data.dtype == dtype
    return opt, ref


RMSPROP = [dict(zip(("alpha", "momentum", "centered", "weight_decay", "maximize"), values))
           for values in itertools.product((0.99, 0.5), (0.0, 0.9), (False, True), (0.0, 0.1),
                                           (False, True))]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", RMSPROP, ids=lambda k: "-".join(f"{v}" for v in k.values()))
def test_rmsprop_matches_pytorch(kwargs, dtype):
    opt, ref = run_optimizers("RMSprop", dict(lr=0.01, eps=1e-6, **kwargs), dtype)
    ours_state = opt.state[opt.param_groups[0]["params"][0]]
    theirs_state = ref.state[ref.param_groups[0]["params"][0]]
    assert set(ours_state) == set(theirs_state)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", [dict(), dict(lr=0.1, lr_decay=0.05),
                                    dict(weight_decay=0.1, initial_accumulator_value=0.3),
                                    dict(eps=1e-3, maximize=True)], ids=str)
def test_adagrad_matches_pytorch(kwargs, dtype):
    opt, ref = run_optimizers("Adagrad", kwargs, dtype)
    ours_state = opt.state[opt.param_groups[0]["params"][0]]
    assert set(ours_state) == set(ref.state[ref.param_groups[0]["params"][0]])


def test_pytorch_defaults_and_errors():
    p = [Parameter(np.zeros(2))]
    assert optim.RMSprop(p).defaults["lr"] == 0.01 and optim.RMSprop(p).defaults["alpha"] == 0.99
    assert optim.Adagrad(p).defaults["eps"] == 1e-10
    with pytest.raises(ValueError, match="alpha"):
        optim.RMSprop(p, alpha=-1)
    with pytest.raises(ValueError, match="lr_decay"):
        optim.Adagrad(p, lr_decay=-1)


def test_state_dict_round_trip_continues_exactly():
    ours, _ = make_params(np.float64)
    opt = optim.RMSprop(ours, momentum=0.9, centered=True)
    for p in ours:
        p.grad = np.ones_like(p.data)
    opt.step()
    clone = [Parameter(p.data.copy()) for p in ours]
    opt2 = optim.RMSprop(clone, momentum=0.9, centered=True)
    opt2.load_state_dict(opt.state_dict())
    for p, q in zip(ours, clone):
        p.grad = q.grad = np.full_like(p.data, 0.5)
    opt.step()
    opt2.step()
    for p, q in zip(ours, clone):
        np.testing.assert_array_equal(p.data, q.data)


# -- schedules ----------------------------------------------------------------------------------
def sgd_pair(lrs=(0.1, 0.03), momentum=0.9):
    ours = optim.SGD([{"params": [Parameter(np.zeros(2))], "lr": lr} for lr in lrs], lr=1.0,
                     momentum=momentum)
    theirs = torch.optim.SGD([{"params": [torch.zeros(2, requires_grad=True)], "lr": lr}
                              for lr in lrs], lr=1.0, momentum=momentum)
    return ours, theirs


def adam_pair(lr=0.01):
    return (optim.Adam([Parameter(np.zeros(2))], lr=lr),
            torch.optim.Adam([torch.zeros(2, requires_grad=True)], lr=lr))


def step_and_compare(ours, theirs, sched, ref, steps, keys=("lr",)):
    for step in range(steps):
        for group in ours.param_groups:
            group["params"][0].grad = np.zeros(2)
        for group in theirs.param_groups:
            group["params"][0].grad = torch.zeros(2)
        ours.step()
        theirs.step()
        sched.step()
        ref.step()
        assert sched.get_last_lr() == pytest.approx(ref.get_last_lr(), rel=1e-13, abs=0), step
        for key in keys:
            for a, b in zip(ours.param_groups, theirs.param_groups):
                assert np.allclose(a[key], b[key], rtol=1e-13, atol=0), (step, key)


@pytest.mark.parametrize("kwargs", [dict(), dict(start_factor=0.1, total_iters=7),
                                    dict(start_factor=0.5, end_factor=0.2, total_iters=3)],
                         ids=str)
def test_linear_lr_matches_pytorch(kwargs):
    ours, theirs = sgd_pair()
    step_and_compare(ours, theirs, lr_scheduler.LinearLR(ours, **kwargs),
                     torch.optim.lr_scheduler.LinearLR(theirs, **kwargs), 15)


def test_lambda_lr_matches_pytorch():
    ours, theirs = sgd_pair()
    fns = [lambda e: 0.9 ** e, lambda e: 1.0 / (1 + e)]
    step_and_compare(ours, theirs, lr_scheduler.LambdaLR(ours, fns),
                     torch.optim.lr_scheduler.LambdaLR(theirs, fns), 12)
    ours, theirs = sgd_pair()
    step_and_compare(ours, theirs, lr_scheduler.LambdaLR(ours, lambda e: min(1.0, (e + 1) / 4)),
                     torch.optim.lr_scheduler.LambdaLR(theirs, lambda e: min(1.0, (e + 1) / 4)),
                     8)


@pytest.mark.parametrize("kwargs", [
    dict(max_lr=0.1, total_steps=30),
    dict(max_lr=[0.2, 0.05], epochs=3, steps_per_epoch=7, pct_start=0.25,
         anneal_strategy="linear"),
    dict(max_lr=0.1, total_steps=25, three_phase=True, div_factor=10.0, final_div_factor=100.0),
    dict(max_lr=0.1, total_steps=20, cycle_momentum=False),
], ids=["cos", "linear-groups", "three-phase", "no-momentum"])
def test_one_cycle_lr_matches_pytorch_with_its_momentum(kwargs):
    ours, theirs = sgd_pair()
    total = kwargs.get("total_steps") or kwargs["epochs"] * kwargs["steps_per_epoch"]
    step_and_compare(ours, theirs, lr_scheduler.OneCycleLR(ours, **kwargs),
                     torch.optim.lr_scheduler.OneCycleLR(theirs, **kwargs), total - 1,
                     keys=("lr", "momentum"))


def test_one_cycle_lr_cycles_adams_beta1_and_stops_at_the_end():
    ours, theirs = adam_pair()
    sched = lr_scheduler.OneCycleLR(ours, max_lr=0.05, total_steps=12)
    ref = torch.optim.lr_scheduler.OneCycleLR(theirs, max_lr=0.05, total_steps=12)
    step_and_compare(ours, theirs, sched, ref, 11, keys=("lr", "betas"))
    ours.step()
    with pytest.raises(ValueError, match="total steps"):
        sched.step()
        sched.step()
    with pytest.raises(ValueError, match="momentum or betas"):
        lr_scheduler.OneCycleLR(optim.Adagrad([Parameter(np.zeros(1))]), max_lr=0.1,
                                total_steps=5)


@pytest.mark.parametrize("case", ["warmup-cosine", "three", "linear-step"])
def test_sequential_lr_matches_pytorch(case):
    def build(lib, opt):
        S = lib.lr_scheduler if lib is optim else torch.optim.lr_scheduler
        if case == "warmup-cosine":
            return S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.1, total_iters=4),
                                        S.CosineAnnealingLR(opt, T_max=10)], milestones=[4])
        if case == "three":
            return S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.2, total_iters=3),
                                        S.StepLR(opt, step_size=2, gamma=0.5),
                                        S.ExponentialLR(opt, gamma=0.9)], milestones=[3, 8])
        return S.SequentialLR(opt, [S.LambdaLR(opt, lambda e: 0.5 + e / 10),
                                    S.MultiStepLR(opt, milestones=[2, 4])], milestones=[5])
    ours, theirs = sgd_pair()
    step_and_compare(ours, theirs, build(optim, ours), build(torch.optim, theirs), 20)


def test_sequential_lr_refuses_what_pytorch_refuses():
    ours, _ = sgd_pair()
    a = lr_scheduler.LinearLR(ours)
    with pytest.raises(ValueError, match="one milestone fewer"):
        lr_scheduler.SequentialLR(ours, [a], milestones=[3])
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        lr_scheduler.SequentialLR(ours, [a, lr_scheduler.ReduceLROnPlateau(ours)], [2])


# -- clipping -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("max_norm, norm_type", [(1.0, 2.0), (0.3, 1.0), (100.0, 2.0),
                                                 (0.5, float("inf")), (2.0, 3.0)])
def test_clip_grad_norm_matches_pytorch(max_norm, norm_type, dtype):
    ours, theirs = make_params(dtype, seed=3)
    rng = np.random.default_rng(4)
    for p, t in zip(ours, theirs):
        grad = rng.standard_normal(p.shape).astype(dtype)
        p.grad, t.grad = grad.copy(), torch.tensor(grad.copy())
    total = nn.utils.clip_grad_norm_(ours, max_norm, norm_type)
    t_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert total == pytest.approx(float(t_total), rel=rtol)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=rtol, atol=rtol)
        assert p.grad.dtype == dtype


def test_clip_grad_value_matches_pytorch_and_errors():
    ours, theirs = make_params(np.float64, seed=5)
    for p, t in zip(ours, theirs):
        p.grad = p.data * 3
        t.grad = t.detach() * 3
    nn.utils.clip_grad_value_(ours, 0.7)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for p, t in zip(ours, theirs):
        np.testing.assert_array_equal(p.grad, t.grad.numpy())
    ours[0].grad[0] = np.inf
    with pytest.raises(NumcnnError, match="non-finite"):
        nn.utils.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    with pytest.raises(NumcnnError, match="Parameters"):
        nn.utils.clip_grad_norm_([np.zeros(3)], 1.0)


# -- fit ----------------------------------------------------------------------------------------
def tiny_problem():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)).astype(np.float32) * 5
    y = rng.integers(0, 3, 40)
    return x, y


def manual_loop(x, y, clip_norm=None, clip_value=None, epochs=2, batch=10):
    """The training fit does, written out: SGD on fixed batches with clipping before each step."""
    nc_model = nn.Linear(6, 3)
    nc_model.weight.data[...] = np.linspace(-1, 1, 18, dtype=np.float32).reshape(3, 6)
    nc_model.bias.data[...] = 0
    opt = optim.SGD(nc_model.parameters(), lr=0.5)
    crit = nn.CrossEntropyLoss()
    for _ in range(epochs):
        for start in range(0, len(x), batch):
            crit(nc_model(x[start:start + batch]), y[start:start + batch])
            opt.zero_grad()
            nc_model.backward(crit.backward())
            if clip_value is not None:
                nn.utils.clip_grad_value_(nc_model.parameters(), clip_value)
            if clip_norm is not None:
                nn.utils.clip_grad_norm_(nc_model.parameters(), clip_norm)
            opt.step()
    return nc_model


@pytest.mark.parametrize("clip", [dict(clip_grad_norm=0.05), dict(clip_grad_value=0.01)])
def test_fit_clips_the_gradients_before_each_step(clip):
    from numcnn.data import DataLoader

    x, y = tiny_problem()
    model = nn.Linear(6, 3)
    model.weight.data[...] = np.linspace(-1, 1, 18, dtype=np.float32).reshape(3, 6)
    model.bias.data[...] = 0
    loader = DataLoader(x, y, batch_size=10, shuffle=False)
    train.fit(model, loader, epochs=2, optimizer=optim.SGD(model.parameters(), lr=0.5),
              print_fn=None, **clip)
    expected = manual_loop(x, y, clip.get("clip_grad_norm"), clip.get("clip_grad_value"))
    unclipped = manual_loop(x, y)
    np.testing.assert_allclose(model.weight.data, expected.weight.data, rtol=1e-6, atol=1e-7)
    assert not np.allclose(model.weight.data, unclipped.weight.data, atol=1e-3)
    with pytest.raises(NumcnnError, match="clip_grad_norm"):
        train.fit(model, loader, clip_grad_norm=-1.0, print_fn=None)


def test_fit_steps_one_cycle_after_every_batch():
    from numcnn.data import DataLoader

    x, y = tiny_problem()
    model = nn.Linear(6, 3)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=0.1, epochs=2, steps_per_epoch=4)
    train.fit(model, DataLoader(x, y, batch_size=10, shuffle=False), epochs=2, optimizer=opt,
              scheduler=sched, print_fn=None)
    assert sched.last_epoch == 8
    ref_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.1, epochs=2, steps_per_epoch=4)
    for _ in range(8):
        ref_opt.step()
        ref.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(ref.get_last_lr()[0], rel=1e-13)


@pytest.mark.parametrize("kind", ["sequential", "onecycle"])
def test_schedules_resume_from_their_state_dict(kind):
    """A schedule rebuilt and loaded from state_dict() (as fit's checkpoints do) continues with
    the same learning rates as the one that ran on."""
    import json

    def build():
        opt = optim.SGD([Parameter(np.zeros(2))], lr=0.1, momentum=0.9)
        S = lr_scheduler
        if kind == "sequential":
            sched = S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.1, total_iters=3),
                                         S.CosineAnnealingLR(opt, T_max=6)], milestones=[3])
        else:
            sched = S.OneCycleLR(opt, max_lr=0.2, total_steps=10)
        return opt, sched

    opt, sched = build()
    for _ in range(4):
        opt.step()
        sched.step()
    state = json.loads(json.dumps(sched.state_dict()))          # plain JSON, as checkpoints
    opt_state = opt.state_dict()
    opt2, sched2 = build()
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(state)
    for _ in range(5):
        opt.step()
        sched.step()
        opt2.step()
        sched2.step()
        assert sched2.get_last_lr() == sched.get_last_lr()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
        assert opt2.param_groups[0]["momentum"] == opt.param_groups[0]["momentum"]
