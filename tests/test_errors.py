"""Every error numcnn raises on bad input derives from NumcnnError (errors.py's promise)."""

import ast
import builtins
from pathlib import Path

import numpy as np
import pytest

import numcnn
from numcnn import errors, nn, optim

SOURCE = Path(numcnn.__file__).parent
# Raised on purpose with a builtin type: a protocol asks for it (json's default hook wants a
# TypeError, __getattr__ an AttributeError, abstract methods NotImplementedError), or the CLI
# reports it in one line (a failed download's OSError, the kernels' MemoryError).
ALLOWED = {"AttributeError", "NotImplementedError", "MemoryError", "UnpicklingError",
           "OSError"}


def _raised_builtins():
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                builtin = getattr(builtins, name, None)
                if isinstance(builtin, type) and issubclass(builtin, BaseException):
                    found.append((path.relative_to(SOURCE).as_posix(), node.lineno, name))
    return found


def test_no_plain_builtin_errors_raised():
    bad = [(f, line, name) for f, line, name in _raised_builtins()
           if name not in ALLOWED and not (f == "io.py" and name == "TypeError")]
    assert bad == []


@pytest.mark.parametrize("cls, base", [(errors.ArgumentError, ValueError),
                                       (errors.ArgumentTypeError, TypeError),
                                       (errors.StateKeyError, KeyError),
                                       (errors.ShapeError, ValueError),
                                       (errors.DTypeError, TypeError)])
def test_error_classes_keep_the_builtin_base(cls, base):
    assert issubclass(cls, errors.NumcnnError) and issubclass(cls, base)


def test_examples_raise_numcnn_errors():
    with pytest.raises(errors.NumcnnError, match="padding_mode"):
        nn.Conv2d(1, 1, 3, padding_mode="mirror")
    with pytest.raises(errors.NumcnnError, match="betas"):
        optim.Adam([nn.Parameter([1.0])], betas=(0.9,))
    with pytest.raises(errors.NumcnnError, match=r"class indices in \[0, 3\)"):
        nn.CrossEntropyLoss()(np.zeros((2, 3)), np.array([0, 3]))
    assert str(errors.StateKeyError("missing keys ['a']")) == "missing keys ['a']"
