"""numcnn.health: the statistics are the numbers they name; the guard names the layer."""

import json

import numpy as np
import pytest
from PIL import Image

from numcnn import nn, optim, train
from numcnn.data import DataLoader
from numcnn.health import HealthMonitor, NonFiniteError, format_epoch, plot_health


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, n)


def _model():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_statistics_are_what_they_name():
    """One step (batch = whole set, every=1), recomputed by hand from the same model."""
    x, y = _data()
    model = _model()
    reference = _model()
    reference.load_state_dict(model.state_dict())
    monitor = HealthMonitor(every=1)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(x, y, batch_size=96, shuffle=False)  # one step on the whole set
    history = train.fit(model, loader, epochs=1, optimizer=optimizer, health=monitor,
                        print_fn=None)
    stats = history.health[0]["layers"]

    conv_out = reference[0](x)
    relu_out = reference[1](conv_out)
    logits = reference[3](reference[2](relu_out))
    criterion = nn.CrossEntropyLoss()
    criterion(logits, y)
    reference.zero_grad()
    reference.backward(criterion.backward())
    conv_grad = np.sqrt(np.sum(reference[0].weight.grad.astype(np.float64) ** 2)
                        + np.sum(reference[0].bias.grad.astype(np.float64) ** 2))
    assert stats["0"]["grad_norm"] == pytest.approx(conv_grad, rel=1e-4)
    update = 0.1 * np.linalg.norm(reference[0].weight.grad) / np.linalg.norm(
        reference[0].weight.data)
    assert stats["0"]["update_ratio"] == pytest.approx(update, rel=1e-4)
    assert stats["1"]["act_mean"] == pytest.approx(float(relu_out.mean()), rel=1e-5)
    assert stats["1"]["act_std"] == pytest.approx(float(relu_out.std()), rel=1e-4)
    dead = np.mean(~(relu_out > 0).any(axis=0))
    assert stats["1"]["dead"] == pytest.approx(dead)
    assert history.to_dict()["health"][0]["layers"]["3"]["type"] == "Linear"
    assert "grad norm" in format_epoch(history.health[0])


def test_dead_relu_units_are_counted():
    """A ReLU after a convolution whose bias is very negative: every unit is dead."""
    x, y = _data()
    model = _model()
    model[0].bias.data[:2] = -1e3  # channels 0 and 1 never fire: half the units
    history = train.fit(model, (x, y), epochs=1, batch_size=32, health=HealthMonitor(every=1),
                        optimizer=optim.SGD(model.parameters(), lr=1e-4), print_fn=None, seed=0)
    assert history.health[0]["layers"]["1"]["dead"] == pytest.approx(0.5, abs=0.02)


def test_guard_names_the_forward_layer_of_a_nan():
    x, y = _data()
    model = _model()
    model[3].weight.data[0, 0] = np.nan  # the linear layer makes the first NaN
    with pytest.raises(NonFiniteError, match=r"forward pass at layer 3 \(Linear\)") as caught:
        train.fit(model, (x, y), epochs=1, batch_size=32, health=True, print_fn=None, seed=0)
    assert (caught.value.direction, caught.value.epoch, caught.value.step) == ("forward", 1, 1)
    assert "learning rate" in str(caught.value)


def test_guard_names_the_backward_layer_of_an_inf():
    class Fragile(nn.Module):
        """Identity forward; the backward pass overflows."""

        def forward(self, x):
            return x

        def backward(self, grad_out):
            return grad_out * np.float32(np.inf)

    x, y = _data()
    model = nn.Sequential(nn.Conv2d(1, 4, 3), Fragile(), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 3))
    with pytest.raises(NonFiniteError, match=r"backward pass at layer 1 \(Fragile\)") as caught:
        train.fit(model, (x, y), epochs=1, batch_size=32, health=True, print_fn=None, seed=0)
    assert caught.value.step == 1 and caught.value.direction == "backward"
    for layer in model:  # the wrappers are gone
        assert "forward" not in layer.__dict__ and "backward" not in layer.__dict__


def test_input_nan_is_named():
    x, y = _data()
    x[5, 0, 0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="input batch"):
        train.fit(_model(), (x, y), epochs=1, batch_size=96, health=True, print_fn=None, seed=0)


def test_health_png_and_history_json(tmp_path):
    x, y = _data()
    history = train.fit(_model(), (x, y), epochs=2, batch_size=32, health=True, print_fn=None,
                        seed=0, run_dir=tmp_path)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert [e["epoch"] for e in saved["health"]] == [1, 2]
    assert train.History.from_dict(saved).health == history.health
    path = plot_health(history.health, tmp_path / "health.png")
    with Image.open(path) as picture:
        assert picture.info["numcnn-grid"] == "2x2" and picture.size[0] > 500


def test_numcnn_train_stops_on_a_diverging_run_naming_the_layer(tmp_path, mnist_small):
    from test_cli import run

    x_train, y_train, x_test, y_test = mnist_small
    npz = tmp_path / "digits.npz"
    np.savez(npz, x_train=x_train[:512], y_train=y_train[:512], x_test=x_test[:64],
             y_test=y_test[:64])
    with np.errstate(all="ignore"):
        code, _, err = run(["train", "--dataset", npz, "--model", "small-cnn", "--epochs", 1,
                            "--optimizer", "sgd", "--lr", 1e4, "--out", tmp_path / "run", "-q"])
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("numcnn: error: the training loss became")
    assert "at epoch 1, step" in line and "pass at layer" in line and "--lr" in line
