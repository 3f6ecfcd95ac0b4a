"""Code-running and malformed checkpoints: refused before anything runs, in one line that names
the file and the global the pickle wanted, never a library's advice to load unsafely
(issue 13, items 1 and 10; issue 12, item 4)."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from probes.loading import load_checkpoint, read_weights

ADVICE = ("weights_only=False", "will likely succeed", "allow_pickle", "add_safe_globals")


class _Reduce:
    """Unpickles to ``fn(*args)``: the classic payload."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


def _payloads(marker: Path) -> dict[str, tuple[Any, str]]:
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": (_Reduce(os.system, f"touch {marker}"), "os.system"),
        "exec": (_Reduce(exec, touch), "exec"),
        "eval": (_Reduce(eval, touch), "eval"),
        "builtins.getattr": (_Reduce(getattr, object, "__subclasses__"), "getattr"),
        "subprocess": (_Reduce(__import__("subprocess").call, ["touch", str(marker)]), "subprocess.call"),
    }


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
@pytest.mark.parametrize("kind", ["os.system", "exec", "eval", "builtins.getattr", "subprocess"])
def test_payload_is_refused_naming_its_global(tmp_path: Path, writer: str, kind: str) -> None:
    marker = tmp_path / "PWNED"
    payload, name = _payloads(marker)[kind]
    obj = {"weight": torch.zeros(2), "x": payload}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(ValueError) as err:
        load_checkpoint(path, arch="torchvision:mobilenet_v2")
    msg = str(err.value)
    assert msg.startswith(f"Refused to load {path}: it would import or call '{name}'"), msg
    assert "\n" not in msg and not any(a in msg for a in ADVICE)
    assert not marker.exists()


def test_whole_module_and_torchscript_are_refused(tmp_path: Path) -> None:
    torch.save(nn.Linear(2, 3), tmp_path / "whole.pt")
    with pytest.raises(ValueError, match=r"whole pickled model \(torch\.nn\.modules\.linear\.Linear\)"):
        read_weights(tmp_path / "whole.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(nn.Linear(2, 3)).save(str(tmp_path / "ts.pt"))
    with pytest.raises(ValueError, match=r"ts\.pt: it is a TorchScript archive, whose code runs when loaded"):
        read_weights(tmp_path / "ts.pt")


@pytest.mark.parametrize("content", [*(np.random.default_rng(s).bytes(4096) for s in (0, 17, 21)),
                                     b"\x80\x02}q\x00X\x01", b""],
                         ids=["random", "random-17", "random-21", "truncated", "empty"])
def test_junk_is_not_a_checkpoint_without_unsafe_advice(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        read_weights(path)
    msg = str(err.value)
    assert msg == (f"Cannot read {path} as a PyTorch checkpoint: it is neither a torch.save archive nor a "
                   f"pickle (corrupt, truncated or another format). Expected a state dict saved with "
                   f"torch.save, or a .safetensors file."), msg


def test_directory_is_reported_as_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt.pt"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"ckpt\.pt is a directory; expected a zoo name or a weights file"):
        load_checkpoint(folder, arch="torchvision:mobilenet_v2")
    with pytest.raises(ValueError, match=r"ckpt\.pt is a directory; expected a weights file"):
        read_weights(folder)


def test_npz_errors_give_no_advice_to_unpickle(tmp_path: Path) -> None:
    import zipfile

    import numpy as np

    from probes.datasets import load_npz

    (tmp_path / "junk.npz").write_bytes(np.random.default_rng(1).bytes(3000))
    np.save(tmp_path / "obj.npy", np.array([1, "a", None], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "obj.npz", "w") as z:
        z.write(tmp_path / "obj.npy", "x.npy")
    for name, expected in (("junk.npz", r"cannot be read as \.npz \(not a zip archive of \.npy arrays\)"),
                           ("obj.npz", r"holds object \(pickled\) arrays, which are never loaded\. Expected")):
        with pytest.raises(ValueError, match=rf"{name}: {expected}") as err:
            load_npz(tmp_path / name)
        assert not any(a in str(err.value) for a in (*ADVICE, "unsafely", "pickle.load"))
