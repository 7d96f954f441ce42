"""Optimizers against torch.optim: same parameters, same gradients, compared after every step.

Float64 must agree to ~1e-12 and float32 to ~1e-6 (relative to each parameter's magnitude): the
only differences PyTorch allows itself are fused multiply-adds and its vectorised sqrt.
"""

import itertools
import json

import numpy as np
import pytest
import torch

from numcnn import nn, optim
from numcnn.errors import DTypeError, ShapeError
from numcnn.nn import Parameter

SHAPES = [(3,), (4, 5), (2, 3, 4)]
# 70_000 elements span several cache blocks of the update (256 KiB): the block loop and its seams
BIG_SHAPES = [(5,), (70_000,)]
STEPS = 12


@pytest.fixture(autouse=True, scope="module")
def _torch_single_thread():
    """Element-wise ops on small tensors: threads only cost time (a lot on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tolerance(dtype) -> float:
    return 1e-12 if np.dtype(dtype) == np.float64 else 1e-6


def assert_close(ours, theirs, dtype, what=""):
    """Agreement relative to the array's magnitude (elements near zero get the same bound)."""
    theirs = np.asarray(theirs)
    scale = max(1.0, float(np.max(np.abs(theirs)))) if theirs.size else 1.0
    np.testing.assert_allclose(ours, theirs, rtol=tolerance(dtype),
                               atol=tolerance(dtype) * scale, err_msg=what)


def make_params(dtype, shapes=SHAPES, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape).astype(dtype) for shape in shapes]
    ours = [Parameter(a.copy()) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    return ours, theirs


def feed_gradients(ours, theirs, rng):
    for p, t in zip(ours, theirs):
        grad = rng.standard_normal(p.shape).astype(p.dtype)
        p.grad = grad.copy()
        t.grad = torch.tensor(grad.copy())


def group_spec(params, groups):
    """Build param-group dicts over ``params`` from [(indices, overrides), ...]."""
    if groups is None:
        return params
    return [dict(params=[params[i] for i in indices], **overrides) for indices, overrides in groups]


def run_against_torch(name, kwargs, dtype, steps=STEPS, groups=None, seed=0, shapes=SHAPES):
    """Step numcnn and torch side by side: parameters after every step, state at the end."""
    ours, theirs = make_params(dtype, shapes, seed=seed)
    opt = getattr(optim, name)(group_spec(ours, groups), **kwargs)
    ref = getattr(torch.optim, name)(group_spec(theirs, groups), **kwargs)
    rng = np.random.default_rng(seed + 1)
    for step in range(steps):
        feed_gradients(ours, theirs, rng)
        opt.step()
        ref.step()
        for index, (p, t) in enumerate(zip(ours, theirs)):
            assert p.dtype == dtype
            assert_close(p.data, t.detach().numpy(), dtype, f"param {index} after step {step + 1}")
    compare_state_dicts(opt.state_dict(), ref.state_dict(), dtype)
    return opt, ref


def compare_state_dicts(ours, theirs, dtype):
    """Same indices, same state keys and values, same hyperparameters as torch's state dict."""
    assert sorted(ours["state"]) == sorted(theirs["state"])
    for index, entries in theirs["state"].items():
        assert set(ours["state"][index]) == set(entries), index
        for key, value in entries.items():
            if key == "step":
                assert ours["state"][index]["step"] == int(value.item())
            else:
                assert ours["state"][index][key].dtype == dtype
                assert_close(ours["state"][index][key], value.numpy(), dtype, f"{index}.{key}")
    assert len(ours["param_groups"]) == len(theirs["param_groups"])
    for group, ref_group in zip(ours["param_groups"], theirs["param_groups"]):
        for key, value in group.items():
            assert ref_group[key] == value, key


# -- every option combination against torch -----------------------------------------------------
def sgd_configs():
    for momentum, dampening, nesterov, weight_decay, maximize in itertools.product(
            [0, 0.9], [0, 0.3], [False, True], [0, 0.05], [False, True]):
        if nesterov and (momentum == 0 or dampening != 0):
            continue
        yield dict(lr=0.05, momentum=momentum, dampening=dampening, nesterov=nesterov,
                   weight_decay=weight_decay, maximize=maximize)


def adam_configs(weight_decay):
    # betas (0.3, 0.5) take PyTorch's other lerp branch (weight 1 - beta1 >= 0.5)
    for betas, wd, amsgrad, maximize in itertools.product(
            [(0.9, 0.999), (0.3, 0.5)], [0, weight_decay], [False, True], [False, True]):
        yield dict(lr=0.01, betas=betas, weight_decay=wd, amsgrad=amsgrad, maximize=maximize)


def config_id(config):
    return ",".join(f"{k}={v}" for k, v in config.items())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("config", list(sgd_configs()), ids=config_id)
def test_sgd_matches_torch(config, dtype):
    run_against_torch("SGD", config, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("config", list(adam_configs(0.05)), ids=config_id)
def test_adam_matches_torch(config, dtype):
    run_against_torch("Adam", config, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("config", list(adam_configs(0.1)), ids=config_id)
def test_adamw_matches_torch(config, dtype):
    run_against_torch("AdamW", config, dtype)


def test_defaults_match_torch():
    for name, keys in [("SGD", ["lr", "momentum", "dampening", "weight_decay", "nesterov",
                                "maximize"]),
                       ("Adam", ["lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
                                 "decoupled_weight_decay"]),
                       ("AdamW", ["lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
                                  "decoupled_weight_decay"])]:
        ours = getattr(optim, name)([Parameter(np.zeros(2))]).defaults
        theirs = getattr(torch.optim, name)([torch.zeros(2, requires_grad=True)]).defaults
        assert {k: ours[k] for k in keys} == {k: theirs[k] for k in keys}, name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.05, maximize=True)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("Adam", dict(lr=0.01, weight_decay=0.05, amsgrad=True, maximize=True)),
    ("AdamW", dict(lr=0.01, betas=(0.3, 0.5), amsgrad=True)),
])
def test_parameters_larger_than_a_block_match_torch(name, kwargs, dtype):
    run_against_torch(name, kwargs, dtype, steps=4, shapes=BIG_SHAPES)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_long_run_stays_within_tolerance(dtype):
    run_against_torch("Adam", dict(lr=0.02, weight_decay=0.01, amsgrad=True), dtype, steps=150)
    run_against_torch("SGD", dict(lr=0.02, momentum=0.9, nesterov=True), dtype, steps=150)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, defaults, overrides", [
    ("SGD", dict(lr=0.05, momentum=0.9), [dict(lr=0.2), dict(momentum=0.5, weight_decay=0.1)]),
    ("Adam", dict(lr=0.01), [dict(lr=0.1, amsgrad=True), dict(betas=(0.5, 0.9), eps=1e-3)]),
    ("AdamW", dict(lr=0.01), [dict(lr=0.003), dict(weight_decay=0.5, maximize=True)]),
])
def test_param_groups_with_their_own_hyperparameters(name, defaults, overrides, dtype):
    groups = [([0, 2], overrides[0]), ([1], overrides[1])]
    opt, _ = run_against_torch(name, defaults, dtype, groups=groups)
    assert opt.param_groups[0]["lr"] == overrides[0].get("lr", defaults["lr"])
    assert [len(g["params"]) for g in opt.param_groups] == [2, 1]
    # indices count across groups in order, as in torch
    assert [g["params"] for g in opt.state_dict()["param_groups"]] == [[0, 1], [2]]


def test_parameter_without_grad_is_skipped_as_in_torch():
    ours, theirs = make_params(np.float64)
    opt = optim.Adam(ours, lr=0.1)
    ref = torch.optim.Adam(theirs, lr=0.1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        feed_gradients(ours, theirs, rng)
        ours[1].grad, theirs[1].grad = None, None
        opt.step()
        ref.step()
    for p, t in zip(ours, theirs):
        assert_close(p.data, t.detach().numpy(), np.float64)
    assert 1 not in opt.state_dict()["state"]
    compare_state_dicts(opt.state_dict(), ref.state_dict(), np.float64)


def test_add_param_group_mid_run_matches_torch():
    ours, theirs = make_params(np.float64)
    opt = optim.SGD(ours[:2], lr=0.1, momentum=0.9)
    ref = torch.optim.SGD(theirs[:2], lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    for step in range(6):
        if step == 3:
            opt.add_param_group({"params": [ours[2]], "lr": 0.01})
            ref.add_param_group({"params": [theirs[2]], "lr": 0.01})
        feed_gradients(ours, theirs, rng)
        opt.step()
        ref.step()
    for p, t in zip(ours, theirs):
        assert_close(p.data, t.detach().numpy(), np.float64)


def test_named_parameters_give_param_names_as_in_torch():
    model = nn.Module()
    model.weight = Parameter(np.ones((2, 3)))
    model.bias = Parameter(np.zeros(2))
    opt = optim.SGD(model.named_parameters(), lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["weight", "bias"]
    assert opt.param_groups[0]["params"] == [model.weight, model.bias]


def test_updates_module_parameters_in_place():
    model = nn.Module()
    model.weight = Parameter(np.ones((2, 3), dtype=np.float32))
    data = model.weight.data
    opt = optim.SGD(model.parameters(), lr=0.5)
    model.weight.grad[...] = 1
    opt.step()
    assert model.weight.data is data
    np.testing.assert_array_equal(data, np.full((2, 3), 0.5, dtype=np.float32))


# -- in place, no reallocation, no float64 on the float32 path --------------------------------
@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.2, maximize=True)),
    ("Adam", dict(weight_decay=0.01, amsgrad=True, maximize=True)),
    ("AdamW", dict(amsgrad=True)),
])
def test_updates_in_place_without_reallocation_or_upcast(name, kwargs):
    ours, _ = make_params(np.float32, SHAPES + BIG_SHAPES)
    data = [p.data for p in ours]
    opt = getattr(optim, name)(ours, **kwargs)
    rng = np.random.default_rng(0)
    for p in ours:
        p.grad[...] = rng.standard_normal(p.shape)
    opt.step()
    buffers = {(i, k): v for i, p in enumerate(ours) for k, v in opt.state[p].items()
               if isinstance(v, np.ndarray)}
    assert buffers
    for _ in range(3):
        for p in ours:
            p.grad[...] = rng.standard_normal(p.shape)
        opt.step()
    for p, array in zip(ours, data):
        assert p.data is array and p.data.dtype == np.float32
    for (i, key), array in buffers.items():
        assert opt.state[ours[i]][key] is array, key  # same buffer, updated in place
        assert array.dtype == np.float32
    assert all(buffer.dtype == np.float32 for buffer in opt._workspace.values())


@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.01, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01, betas=(0.3, 0.99), weight_decay=0.1)),
])
def test_numpy_float64_hyperparameters_do_not_upcast_float32(name, kwargs):
    """np.float64 scalars are 'strong' in NumPy 2: used as-is they would compute in float64.

    The result must equal, bit for bit, the run with Python floats (which NumPy casts to float32).
    """
    as_numpy = {k: (np.float64(v) if isinstance(v, float) else
                    tuple(np.float64(b) for b in v) if isinstance(v, tuple) else v)
                for k, v in kwargs.items()}
    results = []
    for hyper in (kwargs, as_numpy):
        ours, _ = make_params(np.float32, SHAPES + BIG_SHAPES)
        opt = getattr(optim, name)(ours, **hyper)
        rng = np.random.default_rng(0)
        for _ in range(5):
            for p in ours:
                p.grad[...] = rng.standard_normal(p.shape)
            opt.step()
        results.append([p.data.copy() for p in ours])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_non_contiguous_parameter_matches_torch():
    rng = np.random.default_rng(0)
    array = np.asfortranarray(rng.standard_normal((6, 5)))
    ours = Parameter(array)
    assert not ours.data.flags.c_contiguous
    theirs = torch.tensor(np.ascontiguousarray(array), requires_grad=True)
    opt = optim.Adam([ours], lr=0.05, weight_decay=0.1)
    ref = torch.optim.Adam([theirs], lr=0.05, weight_decay=0.1)
    for _ in range(5):
        grad = rng.standard_normal((6, 5))
        ours.grad[...] = grad
        theirs.grad = torch.tensor(grad)
        opt.step()
        ref.step()
        assert_close(ours.data, theirs.detach().numpy(), np.float64)
    assert ours.data is array


# -- zero_grad and step(closure) -----------------------------------------------------------------
def test_zero_grad_zeroes_in_place():
    ours, _ = make_params(np.float32)
    grads = [p.grad for p in ours]
    for p in ours:
        p.grad[...] = 3.0
    optim.Adam(ours).zero_grad()
    for p, grad in zip(ours, grads):
        assert p.grad is grad and not grad.any()


def test_step_calls_closure_first_and_returns_its_loss():
    p = Parameter(np.array([1.0, 2.0]))
    opt = optim.SGD([p], lr=0.5)
    seen = []

    def closure():
        seen.append(p.data.copy())
        p.grad[...] = p.data  # gradient of 0.5 * |p|^2
        return 0.5 * float(p.data @ p.data)

    assert opt.step(closure) == 2.5
    np.testing.assert_array_equal(seen[0], [1.0, 2.0])
    np.testing.assert_array_equal(p.data, [0.5, 1.0])
    assert opt.step() is None


# -- state dict ----------------------------------------------------------------------------------
def through_json_and_arrays(state_dict):
    """What a safetensors + JSON round trip gives back: str indices, lists, arrays apart."""
    arrays = {}
    plain = {"state": {}, "param_groups": state_dict["param_groups"]}
    for index, entries in state_dict["state"].items():
        plain["state"][str(index)] = {}
        for key, value in entries.items():
            if isinstance(value, np.ndarray):
                arrays[f"{index}.{key}"] = value.copy()
            else:
                plain["state"][str(index)][key] = value
    loaded = json.loads(json.dumps(plain))
    for name, array in arrays.items():
        index, key = name.split(".")
        loaded["state"][index][key] = array
    return loaded


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    ("AdamW", dict(lr=0.01, betas=(0.8, 0.95))),
])
def test_state_dict_round_trip_resumes_exactly(name, kwargs, dtype):
    grads = np.random.default_rng(5)
    gradient_steps = [[grads.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(10)]

    def run(params, opt, steps):
        for grad_list in steps:
            for p, g in zip(params, grad_list):
                p.grad[...] = g
            opt.step()

    groups = [([0], dict(lr=0.02)), ([1, 2], {})]
    straight, _ = make_params(dtype)
    opt = getattr(optim, name)(group_spec(straight, groups), **kwargs)
    run(straight, opt, gradient_steps)

    first, _ = make_params(dtype)
    opt1 = getattr(optim, name)(group_spec(first, groups), **kwargs)
    run(first, opt1, gradient_steps[:4])
    weights = [p.data.copy() for p in first]  # what the model checkpoint would hold
    snapshot = opt1.state_dict()
    saved = through_json_and_arrays(snapshot)
    frozen = through_json_and_arrays(snapshot)
    run(first, opt1, gradient_steps[4:5])  # the snapshot is a copy: later steps leave it alone
    for index, entries in frozen["state"].items():
        for key, value in entries.items():
            np.testing.assert_array_equal(snapshot["state"][int(index)][key], value)

    resumed = [Parameter(w) for w in weights]
    opt2 = getattr(optim, name)(group_spec(resumed, groups), lr=123.0)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == 0.02 and opt2.param_groups[1]["lr"] == kwargs["lr"]
    if "betas" in opt2.param_groups[0]:
        assert isinstance(opt2.param_groups[0]["betas"], tuple)
    run(resumed, opt2, gradient_steps[4:])
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a.data, b.data)  # bit for bit: the same operations
    for key, value in opt.state[straight[2]].items():
        np.testing.assert_array_equal(value, opt2.state[resumed[2]][key])


def test_load_state_dict_copies_and_casts_arrays():
    p = Parameter(np.zeros(4, dtype=np.float32))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    buffer = np.arange(4, dtype=np.float64)
    opt.load_state_dict({"state": {0: {"momentum_buffer": buffer}},
                         "param_groups": [dict(opt.state_dict()["param_groups"][0])]})
    loaded = opt.state[p]["momentum_buffer"]
    assert loaded.dtype == np.float32 and not np.shares_memory(loaded, buffer)
    buffer[:] = -1
    np.testing.assert_array_equal(loaded, [0, 1, 2, 3])


@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
])
def test_loads_a_torch_state_dict_and_continues_like_torch(name, kwargs):
    ours, theirs = make_params(np.float64)
    ref = getattr(torch.optim, name)(theirs, **kwargs)
    rng = np.random.default_rng(0)
    for _ in range(4):
        feed_gradients(ours, theirs, rng)
        ref.step()
    for p, t in zip(ours, theirs):
        p.data[...] = t.detach().numpy()
    torch_state = ref.state_dict()
    as_numpy = {"state": {i: {k: v.numpy() for k, v in entries.items()}
                          for i, entries in torch_state["state"].items()},
                "param_groups": torch_state["param_groups"]}
    opt = getattr(optim, name)(ours, lr=1.0)
    opt.load_state_dict(as_numpy)
    assert opt.param_groups[0]["lr"] == kwargs["lr"]
    for _ in range(4):
        feed_gradients(ours, theirs, rng)
        opt.step()
        ref.step()
        for p, t in zip(ours, theirs):
            assert_close(p.data, t.detach().numpy(), np.float64)


def test_load_state_dict_refuses_mismatched_dicts():
    ours, _ = make_params(np.float64)
    opt = optim.Adam(ours)
    for p in ours:
        p.grad[...] = 1
    opt.step()
    good = opt.state_dict()
    with pytest.raises(ValueError, match="expects a dict with 'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})
    other = optim.Adam([{"params": ours[:1]}, {"params": ours[1:]}])
    with pytest.raises(ValueError, match=r"expected 2 parameter groups \(the optimizer.s\), got 1"):
        other.load_state_dict(good)
    smaller = optim.Adam(ours[:2])
    with pytest.raises(ValueError, match="group 0 has 3 parameters in the state dict, 2 in"):
        smaller.load_state_dict(good)
    bad = opt.state_dict()
    bad["state"][1]["exp_avg"] = np.zeros((5, 4))
    with pytest.raises(ShapeError, match=r"'exp_avg' of parameter 1 has shape \(5, 4\), but the "
                                         r"parameter has shape \(4, 5\)"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    bad["state"][7] = bad["state"][0]
    with pytest.raises(ValueError, match="state for parameter index 7"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    bad["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="invalid learning rate lr -1.0"):
        opt.load_state_dict(bad)
    bad = opt.state_dict()
    bad["state"][0]["step"] = 2.5
    with pytest.raises(ValueError, match="parameter 0 has step 2.5"):
        opt.load_state_dict(bad)
    opt.load_state_dict(good)  # the failed loads left nothing half-done
    assert opt.state[ours[0]]["step"] == 1


def test_adamw_state_keeps_decoupled_weight_decay():
    p = Parameter(np.ones(3))
    opt = optim.AdamW([p])
    state = opt.state_dict()
    state["param_groups"][0]["decoupled_weight_decay"] = False
    opt.load_state_dict(state)
    assert opt.param_groups[0]["decoupled_weight_decay"] is True


# -- duplicates ------------------------------------------------------------------------------------
def test_parameter_in_two_groups_is_refused_like_torch():
    p, q = Parameter(np.zeros(2)), Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [q, p]}], lr=0.1)
    t = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="more than one parameter group"):
        torch.optim.SGD([{"params": [t]}, {"params": [t]}], lr=0.1)
    opt = optim.Adam([p])
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [p]})


def test_parameter_given_twice_is_refused():
    """torch warns (and would update it twice per step); numcnn refuses."""
    p = Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="holds the same Parameter more than once"):
        optim.SGD([p, p], lr=0.1)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        t = torch.zeros(2, requires_grad=True)
        torch.optim.SGD([t, t], lr=0.1)


def test_shared_weights_of_a_module_are_optimised_once():
    shared = Parameter(np.ones(3))
    model = nn.Module()
    model.a = nn.Module()
    model.b = nn.Module()
    model.a.weight = shared
    model.b.weight = shared
    opt = optim.SGD(model.parameters(), lr=0.5)
    assert opt.param_groups[0]["params"] == [shared]
    shared.grad[...] = 1
    opt.step()
    np.testing.assert_array_equal(shared.data, [0.5, 0.5, 0.5])


# -- errors ----------------------------------------------------------------------------------------
def one_param():
    return [Parameter(np.zeros(2))]


@pytest.mark.parametrize("make, error, message", [
    (lambda: optim.SGD(one_param(), lr=-0.1), ValueError, r"SGD: invalid learning rate lr -0\.1"),
    (lambda: optim.SGD(one_param(), lr=float("nan")), ValueError, "invalid learning rate lr nan"),
    (lambda: optim.SGD(one_param(), lr="0.1"), ValueError, "invalid learning rate lr '0.1'"),
    (lambda: optim.SGD(one_param(), momentum=-0.5), ValueError, r"invalid momentum -0\.5"),
    (lambda: optim.SGD(one_param(), dampening=-1), ValueError, "invalid dampening -1"),
    (lambda: optim.SGD(one_param(), weight_decay=-1e-4), ValueError, "invalid weight_decay"),
    (lambda: optim.SGD(one_param(), nesterov=True), ValueError,
     "Nesterov momentum requires a momentum > 0 and zero dampening, got momentum=0"),
    (lambda: optim.SGD(one_param(), momentum=0.9, dampening=0.1, nesterov=True), ValueError,
     r"dampening=0\.1"),
    (lambda: optim.Adam(one_param(), lr=-1), ValueError, "Adam: invalid learning rate lr -1"),
    (lambda: optim.Adam(one_param(), betas=(1.0, 0.999)), ValueError,
     r"invalid beta parameter at index 0: 1\.0 \(must be in \[0, 1\)\)"),
    (lambda: optim.Adam(one_param(), betas=(0.9, -0.1)), ValueError,
     r"invalid beta parameter at index 1: -0\.1"),
    (lambda: optim.AdamW(one_param(), betas=(0.9,)), ValueError,
     r"AdamW: betas must be a pair \(beta1, beta2\), got \(0\.9,\)"),
    (lambda: optim.Adam(one_param(), eps=-1e-8), ValueError, "invalid epsilon eps"),
    (lambda: optim.AdamW(one_param(), weight_decay=-0.01), ValueError,
     "AdamW: invalid weight_decay -0.01"),
    (lambda: optim.SGD([{"params": one_param(), "lr": -2.0}], lr=0.1), ValueError,
     r"invalid learning rate lr -2\.0"),
    (lambda: optim.Adam([{"params": one_param(), "betas": (0.9, 1.5)}]), ValueError,
     "beta parameter at index 1: 1.5"),
    (lambda: optim.SGD([], lr=0.1), ValueError, "SGD got an empty parameter list"),
    (lambda: optim.SGD(Parameter(np.zeros(2)), lr=0.1), TypeError,
     "params should be an iterable of Parameters or of dicts, but got a single Parameter"),
    (lambda: optim.SGD([np.zeros(2)], lr=0.1), TypeError,
     "SGD can only optimize numcnn Parameters, but entry 0 of the group is numpy.ndarray"),
    (lambda: optim.SGD([torch.zeros(2)], lr=0.1), TypeError, "entry 0 of the group is torch"),
    (lambda: optim.SGD(set(one_param()), lr=0.1), TypeError, "ordered collection"),
    (lambda: optim.SGD([{"params": set(one_param())}], lr=0.1), TypeError, "not a set"),
    (lambda: optim.SGD([Parameter(np.zeros(2, dtype=np.int64))], lr=0.1), DTypeError,
     "SGD can only optimize floating-point parameters, but entry 0 of the group has dtype int64"),
    (lambda: optim.SGD([{"lr": 0.1}], lr=0.1), ValueError, "a param group needs a 'params' entry"),
    (lambda: optim.SGD([("w", Parameter(np.zeros(1))), Parameter(np.zeros(1))]), ValueError,
     "with a name or none"),
])
def test_bad_arguments_raise_clear_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_torch_refuses_what_numcnn_refuses():
    """The hyperparameter checks torch has, numcnn has too (same cases, same exception type)."""
    t = [torch.zeros(2, requires_grad=True)]
    for make in [lambda: torch.optim.SGD(t, lr=-0.1), lambda: torch.optim.SGD(t, momentum=-1),
                 lambda: torch.optim.SGD(t, weight_decay=-1),
                 lambda: torch.optim.SGD(t, nesterov=True),
                 lambda: torch.optim.Adam(t, betas=(1.0, 0.9)), lambda: torch.optim.Adam(t, eps=-1),
                 lambda: torch.optim.SGD([], lr=0.1)]:
        with pytest.raises(ValueError):
            make()


def test_gradient_of_wrong_shape_or_dtype_is_refused():
    p = Parameter(np.zeros((2, 3), dtype=np.float32))
    q = Parameter(np.zeros(4, dtype=np.float32))
    opt = optim.SGD([q, p], lr=0.1)
    p.grad = np.zeros(3, dtype=np.float32)  # would broadcast silently
    with pytest.raises(ShapeError, match=r"SGD: parameter 1 has shape \(2, 3\), but its grad has "
                                         r"shape \(3,\)"):
        opt.step()
    p.grad = np.zeros((2, 3), dtype=np.float64)
    with pytest.raises(DTypeError, match="parameter 1 has dtype float32, but its grad has dtype "
                                         "float64"):
        opt.step()


def test_state_of_another_dtype_is_refused_after_model_to():
    model = nn.Module()
    model.weight = Parameter(np.ones(3, dtype=np.float32))
    opt = optim.Adam(model.parameters())
    model.weight.grad[...] = 1
    opt.step()
    model.to(np.float64)
    model.weight.grad[...] = 1
    with pytest.raises(DTypeError, match=r"state 'exp_avg' of parameter 0 is float32 \(3,\), but "
                                         r"the parameter is now float64 \(3,\); create the "
                                         r"optimizer after converting the model"):
        opt.step()


def test_repr_lists_groups_and_hyperparameters():
    text = repr(optim.SGD([{"params": one_param()}, {"params": one_param(), "lr": 0.5}],
                          lr=0.1, momentum=0.9))
    assert text.startswith("SGD (")
    assert "Parameter Group 0" in text and "Parameter Group 1" in text
    assert "    lr: 0.1" in text and "    lr: 0.5" in text and "momentum: 0.9" in text
