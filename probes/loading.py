"""Safe loading of any checkpoint, its input preprocessing, and a prediction sanity check.

What can be loaded (:func:`load_checkpoint`)
--------------------------------------------
- **Our zoo by name** (``digits-linear-s0``): the JSON card in :data:`checkpoints.CHECKPOINT_DIR`
  gives the architecture and the input spec; the weights' sha256 is checked against the card.
  A weights file anywhere with our card beside it (same stem, ``.json``) loads the same way.
- **Weights files**: ``.safetensors`` (preferred) and ``.pt`` / ``.pth`` / ``.bin`` through
  ``torch.load(weights_only=True)`` only. A pickle that would import or call anything beyond
  tensors and plain containers is refused before any of it runs. State dicts may be wrapped as
  ``{"state_dict": ...}``, ``{"model_state_dict": ...}`` or ``{"model": ...}``; the
  ``module.`` (DataParallel) and ``_orig_mod.`` (``torch.compile``) prefixes are stripped.
  A whole pickled ``nn.Module`` is refused (save its ``state_dict`` instead), and so is a
  TorchScript archive, whose code runs when loaded (the message says how to export a state
  dict). A refusal names the global the pickle wanted (``os.system``). Weights with NaN or
  Inf values are refused before probing (``allow_nonfinite=True`` warns instead).
- **Cards** are validated against a schema before anything is built (:func:`validate_card`:
  types, ranges, a parameter limit counted on the meta device); errors name the file and key.
- **Architectures** for a bare state dict (``arch``): ``torchvision:NAME`` (e.g.
  ``torchvision:mobilenet_v2``), ``timm:NAME`` (e.g. ``timm:efficientnet_b0``), or the user's
  own factory ``package.module:build`` / ``path/to/model.py:build`` (code the user names
  explicitly, imported and called without arguments: the user's own trusted code, never a
  string from an untrusted source; ``allow_factory=False`` refuses factories, as the dashboard
  does). The number of classes of torchvision and
  timm models is read from the classifier weight in the state dict. Without a file
  (``load_checkpoint("torchvision:mobilenet_v2")``) the architecture gets seeded random weights.

Input specs (preprocessing presets)
-----------------------------------
Every :class:`LoadedModel` carries an :class:`~probes.preprocess.InputSpec`: torchvision
architectures take it from their default weights' metadata (``weights.transforms()``: crop size,
mean, std, interpolation; ships with torchvision, nothing downloaded), timm from
``timm.data.resolve_data_config`` (the model's pretrained config), our zoo from the card, a
user factory from ``mean``/``std``/``size`` with ImageNet defaults (mean 0.485 0.456 0.406, std
0.229 0.224 0.225, 224 px). ``mean``/``std``/``size`` also override a preset; ``input_spec``
replaces it. ``LoadedModel.preset`` keeps the library's evaluation resize (``resize_size``:
shorter side before the centre crop), which :func:`predict` applies.
"""

from __future__ import annotations

import _compat_pickle
import collections
import dataclasses
import difflib
import importlib
import importlib.util
import json
import math
import pickle
import re
import struct
import sys
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probes._io import sha256_file
from probes._lazy import import_torchvision
from probes.preprocess import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS, InputSpec

__all__ = [
    "ARCH_FORMS",
    "MAX_CARD_PARAMS",
    "LoadedModel",
    "card_beside",
    "check_finite",
    "format_predictions",
    "imagenet_class_names",
    "list_zoo",
    "load_checkpoint",
    "load_images",
    "predict",
    "read_card",
    "read_weights",
    "validate_card",
    "zoo_param_count",
]

#: The accepted forms of ``arch``, quoted in error messages and ``--help``.
ARCH_FORMS = ("'zoo', 'torchvision:NAME' (e.g. 'torchvision:mobilenet_v2'), 'timm:NAME' "
              "(e.g. 'timm:efficientnet_b0'), 'package.module:FACTORY' or 'path/to/model.py:FACTORY'")

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")

# Designs of known third-party families: all use linear bottlenecks with residuals between
# bottlenecks, except ShuffleNetV2 whose branch ends in a ReLU after the last 1x1 conv.
_KNOWN_DESIGNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("mobilenet_v2", {"bottleneck_act": "linear", "expand_ratio": 6, "shortcut": "bottleneck"}),
    ("mobilenetv2", {"bottleneck_act": "linear", "expand_ratio": 6, "shortcut": "bottleneck"}),
    ("mobilenet_v3", {"bottleneck_act": "linear", "expand_ratio": None, "shortcut": "bottleneck"}),
    ("mobilenetv3", {"bottleneck_act": "linear", "expand_ratio": None, "shortcut": "bottleneck"}),
    ("efficientnet", {"bottleneck_act": "linear", "expand_ratio": 6, "shortcut": "bottleneck"}),
    ("mnasnet", {"bottleneck_act": "linear", "expand_ratio": None, "shortcut": "bottleneck"}),
    ("shufflenet_v2", {"bottleneck_act": "relu", "expand_ratio": 1, "shortcut": "none"}),
)


@dataclasses.dataclass
class LoadedModel:
    """A model ready to probe, with where it came from and how to feed it.

    Attributes
    ----------
    model : nn.Module
        In eval mode, on the CPU.
    name : str
        Zoo name, file stem, or the architecture name for random weights.
    source : str
        ``"zoo"``, the absolute path of the weights file, or ``"torchvision:NAME (random
        weights)"`` when no file was given.
    arch : str
        ``"zoo"``, ``"torchvision:NAME"``, ``"timm:NAME"`` or ``"factory:SPEC"``.
    input_spec : InputSpec
    design : dict
        ``bottleneck_act``, ``expand_ratio``, ``shortcut``, ``seed``, ``design``; from the card
        for our zoo, best effort (``"unknown"`` / None) otherwise.
    card : dict or None
        The zoo JSON card.
    sha256 : str or None
        Of the weights file.
    class_names : list of str or None
    preset : dict
        The library's evaluation transform: ``library``, ``resize_size`` (shorter side before
        the centre crop of ``input_spec.size``), ``crop_pct`` and, for torchvision/timm, the
        weights or pretrained-config tag it came from.
    """

    model: nn.Module
    name: str
    source: str
    arch: str
    input_spec: InputSpec
    design: dict[str, Any]
    card: dict[str, Any] | None = None
    sha256: str | None = None
    class_names: list[str] | None = None
    preset: dict[str, Any] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# cards

#: Models built from a card may have at most this many parameters (counted on the meta device,
#: before anything is allocated): a card is data from a file and must not exhaust the memory.
MAX_CARD_PARAMS = 100_000_000

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class _CardChecker:
    """One-line errors naming the card file and the dotted key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, expected: str, got: Any) -> ValueError:
        return ValueError(f"Card {self.path}: key {key!r} must be {expected}. Got {got!r} instead.")

    def int_(self, key: str, v: Any, low: int, high: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise self.fail(key, f"an int in [{low}, {high}]", v)
        return v

    def num(self, key: str, v: Any, low: float, high: float, *, low_open: bool = False) -> float:
        ok = (not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
              and (low < v if low_open else low <= v) and v <= high)
        if not ok:
            raise self.fail(key, f"a number in {'(' if low_open else '['}{low}, {high}]", v)
        return float(v)

    def str_(self, key: str, v: Any) -> str:
        if not isinstance(v, str):
            raise self.fail(key, "a string", v)
        return v

    def numbers(self, key: str, v: Any) -> None:
        """A list of numbers, or of lists of numbers (null allowed: NaN in JSON)."""
        if not isinstance(v, list):
            raise self.fail(key, "a list of numbers (or of lists of numbers)", type(v).__name__)
        for row in v:
            items = row if isinstance(row, list) else [row]
            if not all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)) for x in items):
                raise self.fail(key, "a list of numbers (or of lists of numbers)", row)


def zoo_param_count(config: Any) -> int:
    """Parameters of ``build_model(config)``, counted from the config without building it.

    Each ConvBNAct (bias-free conv + BatchNorm) of ``c_in -> c_out`` channels, kernel ``k`` and
    ``g`` groups holds ``c_in / g * c_out * k**2 + 2 * c_out`` parameters; the classifier
    ``head * classes + classes``.
    """
    from probes.zoo import _make_divisible, stage_config

    def cba(c_in: int, c_out: int, k: int = 1, groups: int = 1) -> int:
        return c_in // groups * c_out * k * k + 2 * c_out

    stem = _make_divisible(32 * config.width_mult)
    total, c_in = cba(config.in_channels, stem, 3), stem
    for t, c, n, _ in stage_config(config):
        for _ in range(n):
            hidden = c_in * t
            total += (cba(c_in, hidden) if t != 1 else 0) + cba(hidden, hidden, 3, hidden) + cba(hidden, c)
            c_in = c
    head = config.head_channels or _make_divisible(1280 * max(1.0, config.width_mult))
    return total + cba(c_in, head) + head * config.num_classes + config.num_classes


def validate_card(card: Any, path: str | Path) -> Any:
    """Check a zoo card against its schema and return the :class:`~probes.zoo.ZooConfig` it names.

    Every key the loader uses is checked for its type and range, and the model's parameter
    count is computed from the config alone (:func:`zoo_param_count`) and compared with
    :data:`MAX_CARD_PARAMS` and with the card's own ``n_params``, all before the model is built.
    Keys the loader does not use (training history, versions, ``gradient_norms`` ...) are
    checked only where their form is fixed.

    Raises
    ------
    ValueError
        One line naming the card file, the dotted key, what was expected and what was found.
    """
    from probes.zoo import ACTIVATIONS, SCHEDULES, SHORTCUTS, ZooConfig

    path = Path(path)
    ck = _CardChecker(path)
    if not isinstance(card, dict):
        raise ck.fail("(top level)", "a JSON object", type(card).__name__)
    arch = card.get("architecture")
    if not isinstance(arch, dict) or arch.get("family") != "zoo":
        raise ck.fail("architecture", "an object with family 'zoo' and a config",
                      arch if not isinstance(arch, dict) else {"family": arch.get("family")})
    cfg = arch.get("config")
    if not isinstance(cfg, dict):
        raise ck.fail("architecture.config", "an object of zoo config keys", cfg)
    known = {f.name for f in dataclasses.fields(ZooConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ck.fail("architecture.config", f"an object with keys from {sorted(known)}", unknown)
    k = "architecture.config."
    acts = cfg.get("bottleneck_act", "linear")
    allowed = sorted(set(ACTIVATIONS) | set(SCHEDULES))
    if not (isinstance(acts, str) and acts in allowed or isinstance(acts, list) and acts
            and all(isinstance(a, str) and a in ACTIVATIONS for a in acts)):
        raise ck.fail(k + "bottleneck_act", f"one of {allowed} or a list of {sorted(ACTIVATIONS)}", acts)
    ck.int_(k + "expand_ratio", cfg.get("expand_ratio", 6), 1, 32)
    ck.num(k + "width_mult", cfg.get("width_mult", 1.0), 0.0, 8.0, low_open=True)
    if cfg.get("shortcut", "bottleneck") not in SHORTCUTS:
        raise ck.fail(k + "shortcut", f"one of {list(SHORTCUTS)}", cfg.get("shortcut"))
    ck.int_(k + "in_channels", cfg.get("in_channels", 3), 1, 64)
    ck.int_(k + "input_size", cfg.get("input_size", 224), 8, 4096)
    ck.int_(k + "num_classes", cfg.get("num_classes", 1000), 1, 100_000)
    if cfg.get("head_channels") is not None:
        ck.int_(k + "head_channels", cfg["head_channels"], 1, 65_536)
    ck.num(k + "dropout", cfg.get("dropout", 0.2), 0.0, 1.0)
    for key in ("name", "design", "weights_file"):
        if key in card:
            ck.str_(key, card[key])
    weights_file = card.get("weights_file")
    if weights_file is not None and (Path(weights_file).name != weights_file or weights_file in (".", "..")):
        raise ck.fail("weights_file", "a file name beside the card (no folders)", weights_file)
    if card.get("sha256") is not None and not (isinstance(card["sha256"], str)
                                               and _SHA256_RE.fullmatch(card["sha256"])):
        raise ck.fail("sha256", "64 lowercase hex digits", card["sha256"])
    if card.get("seed") is not None:
        ck.int_("seed", card["seed"], 0, 2**63 - 1)
    names = card.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ck.fail("class_names", "a list of strings", names)
    for key in ("dataset", "input", "optimizer", "versions"):
        if key in card and not isinstance(card[key], dict):
            raise ck.fail(key, "an object", card[key])
    if "input" in card:
        try:
            InputSpec.from_dict(card["input"])
        except (TypeError, ValueError) as e:
            raise ck.fail("input", "an input spec (size, channels, mean, std, interpolation)",
                          card["input"]) from e
    grads = card.get("gradient_norms")
    if grads is not None:
        if not isinstance(grads, dict):
            raise ck.fail("gradient_norms", "an object with description, blocks, mean and std", grads)
        ck.str_("gradient_norms.description", grads.get("description", ""))
        ck.int_("gradient_norms.blocks", grads.get("blocks", 0), 0, 10_000)
        for key in ("mean", "std"):
            ck.numbers(f"gradient_norms.{key}", grads.get(key, []))
    try:
        config = ZooConfig.from_dict(cfg)
        n_params = zoo_param_count(config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"Card {path}: key 'architecture.config' is not a valid zoo config: {e}") from None
    if n_params > MAX_CARD_PARAMS:
        raise ValueError(
            f"Card {path}: key 'architecture.config' describes a model of {n_params:,} parameters; "
            f"the limit for a card is {MAX_CARD_PARAMS:,}. Check width_mult and head_channels.")
    if card.get("n_params") is not None and card["n_params"] != n_params:
        raise ck.fail("n_params", f"{n_params:,}, the parameter count of its architecture.config",
                      card["n_params"])
    return config


def read_card(path: str | Path) -> dict[str, Any]:
    """Read and validate a zoo card (see :func:`validate_card`); errors name the file."""
    path = Path(path)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"Cannot read the card {path}: {e.strerror or e}.") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"Card {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.") from None
    validate_card(card, path)
    return card


# --------------------------------------------------------------------------------------------
# zoo


def _checkpoint_dir() -> Path:
    from checkpoints import CHECKPOINT_DIR

    return CHECKPOINT_DIR


def list_zoo() -> list[dict[str, Any]]:
    """Deprecated alias of :func:`probes.catalogue.list_checkpoints` ("zoo" names the architecture).

    .. deprecated::
        Use ``probes.catalogue.list_checkpoints()``.
    """
    import warnings

    from probes.catalogue import list_checkpoints

    warnings.warn("probes.loading.list_zoo is deprecated; use probes.catalogue.list_checkpoints "
                  "(the shipped checkpoints are the catalogue, the zoo is the architecture).",
                  DeprecationWarning, stacklevel=2)
    return list_checkpoints(_checkpoint_dir())


def _zoo_class_names(card: dict[str, Any], num_classes: int) -> list[str] | None:
    names = card.get("class_names")
    if names is None:
        from probes.datasets import SHAPE_NAMES

        names = {"digits": [str(i) for i in range(10)], "shapes": list(SHAPE_NAMES)}.get(
            (card.get("dataset") or {}).get("name"))
    return list(names) if names is not None and len(names) == num_classes else None


def _load_zoo(card: dict[str, Any], weights: Path, card_path: Path, *, source: str,
              allow_nonfinite: bool) -> LoadedModel:
    from probes.zoo import build_model

    if not weights.is_file():
        raise ValueError(f"The weights file {weights} named by the card {card_path} does not exist.")
    digest = sha256_file(weights)
    if card.get("sha256") and digest != card["sha256"]:
        raise ValueError(
            f"The weights file {weights} does not match its card {card_path}: sha256 {digest} "
            f"instead of {card['sha256']}. The file is corrupt or was replaced; re-download or "
            f"retrain it (bnprobe train {card.get('name', weights.stem)})."
        )
    config = validate_card(card, card_path)
    state = read_weights(weights)
    check_finite(state, weights, allow_nonfinite=allow_nonfinite)
    model = build_model(config)
    _load_into(model, state, weights)
    spec = InputSpec.from_dict(card["input"], source=f"checkpoint card {card_path.name}") \
        if "input" in card else InputSpec(size=config.input_size, channels=config.in_channels,
                                          mean=(0.5,) * config.in_channels,
                                          std=(0.5,) * config.in_channels,
                                          source=f"zoo config (card {card_path.name} has no input)")
    cfg = card["architecture"]["config"]
    design = {"bottleneck_act": cfg.get("bottleneck_act", "linear"),
              "expand_ratio": cfg.get("expand_ratio", 6), "shortcut": cfg.get("shortcut", "bottleneck"),
              "seed": card.get("seed"), "design": card.get("design", "unknown")}
    return LoadedModel(model=model.eval(), name=card.get("name", weights.stem), source=source,
                       arch="zoo", input_spec=spec, design=design, card=card, sha256=digest,
                       class_names=_zoo_class_names(card, config.num_classes),
                       preset={"library": "zoo", "resize_size": spec.size, "crop_pct": 1.0})


# --------------------------------------------------------------------------------------------
# reading weights files


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"Cannot read {path} as a safetensors file: {e}") from e


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


# Globals of plain containers and of torch itself: not the ones worth naming in a refusal.
_SAFE_GLOBAL_PREFIXES = ("torch.", "collections.OrderedDict", "_codecs.encode")
_SAFE_GLOBALS = {f"builtins.{n}" for n in ("set", "frozenset", "bytearray", "slice", "complex", "int",
                                           "float", "bool", "str", "bytes", "dict", "list", "tuple")}
# Names as users know them: os.system pickles as posix.system (the C module behind os);
# built-ins are named plainly ("exec"), as torch does.
_MODULE_ALIASES = {"posix": "os", "nt": "os", "builtins": ""}


def _pickle_bytes(path: Path) -> bytes:
    """The pickle stream of a torch file: ``data.pkl`` of a zip archive, else the file itself."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
            return z.read(name) if name else b""
    return path.read_bytes()


def _pickle_globals(data: bytes) -> tuple[list[str], bool]:
    """Globals a pickle stream imports, read with :mod:`pickletools` (nothing is executed),
    and whether the stream parsed as a pickle up to its STOP."""
    import pickletools

    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - any parse failure: not a (complete) pickle
        return found, False
    return found, True


def _not_a_checkpoint(path: Path) -> ValueError:
    return ValueError(
        f"Cannot read {path} as a PyTorch checkpoint: it is neither a torch.save archive nor a "
        f"pickle (corrupt, truncated or another format). Expected a state dict saved with "
        f"torch.save, or a .safetensors file."
    )


def _refusal(path: Path, err: Exception) -> ValueError:
    m = re.search(r"GLOBAL (\S+)", str(err))
    glob, parsed = (m.group(1), True) if m else (None, False)
    if glob is None or glob.startswith("torch.") and not glob.startswith("torch.nn.modules."):
        # Name the global a payload is after (os.system), not one of torch's own that it
        # stopped at first (torch.storage._load_from_bytes in a plain pickle of a tensor).
        try:
            names, parsed = _pickle_globals(_pickle_bytes(path))
        except (OSError, zipfile.BadZipFile, KeyError):
            names, parsed = [], False
        glob = next((n for n in names if not n.startswith(_SAFE_GLOBAL_PREFIXES)
                     and n not in _SAFE_GLOBALS), glob)
    if glob is not None:
        module, _, attr = glob.rpartition(".")
        # protocol <= 2 (torch.save's) spells Python 3 names the Python 2 way; map them back as
        # the unpickler would (commands.call -> subprocess.call, __builtin__ -> builtins)
        module, attr = _compat_pickle.NAME_MAPPING.get(
            (module, attr), (_compat_pickle.IMPORT_MAPPING.get(module, module), attr))
        module = _MODULE_ALIASES.get(module, module)
        glob = f"{module}.{attr}" if module else attr
    if glob and glob.startswith("torch.nn.modules."):
        return ValueError(
            f"Refused to load {path}: it is a whole pickled model ({glob}); loading it would run "
            f"code from the file. Save its weights instead: torch.save(model.state_dict(), ...) "
            f"or safetensors.torch.save_file(model.state_dict(), ...), and load them with --arch."
        )
    if glob is None and not parsed:
        return _not_a_checkpoint(path)
    what = f"it would import or call {glob!r}" if glob else (
        "it contains pickle instructions beyond tensors and plain containers")
    return ValueError(
        f"Refused to load {path}: {what}, which weights-only loading does not allow (nothing "
        f"from the file was executed). Only tensors and plain containers are accepted; convert "
        f"the checkpoint to a state dict or to .safetensors in an environment you trust."
    )


def _first_line(err: Exception) -> str:
    """A library's message, first line only and never its advice to load unsafely."""
    line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return type(err).__name__ if "weights_only" in line or "allow_pickle" in line else line


def _read_torch(path: Path) -> Any:
    if _is_torchscript(path):
        raise ValueError(
            f"Refused to load {path}: it is a TorchScript archive, whose code runs when loaded. "
            f"Export a state dict where you trust the file: torch.save(torch.jit.load(FILE)"
            f".state_dict(), 'weights.pt') or safetensors.torch.save_file(...), and load it with "
            f"--arch."
        )
    try:
        with warnings.catch_warnings():
            # torch's note on a pickle protocol it did not write: the refusal below says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refusal(path, e) from None
    except (KeyError, IndexError, EOFError, UnicodeDecodeError, struct.error, zipfile.BadZipFile):
        # what torch's legacy reader raises on bytes that are no checkpoint ("KeyError: 213",
        # "pop from empty list", "unpack requires a buffer of 4 bytes")
        raise _not_a_checkpoint(path) from None
    except Exception as e:  # noqa: BLE001 - any other failure: not a torch file
        raise ValueError(
            f"Cannot read {path} as a PyTorch checkpoint ({type(e).__name__}: {_first_line(e)}). "
            f"Expected a state dict saved with torch.save."
        ) from None
    return obj


def _with_metadata(tensors: dict[str, torch.Tensor], source: Any, prefix: str) -> dict[str, torch.Tensor]:
    """``tensors`` as an OrderedDict carrying the ``_metadata`` (per-module versions) of ``source``.

    Modules such as torchvision's MNASNet read their version from it in ``load_state_dict``.
    """
    out: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict(tensors)
    meta = getattr(source, "_metadata", None)
    if meta is not None:
        strip = (lambda k: k[len(prefix):] if k.startswith(prefix) else ("" if k == prefix.rstrip(".") else k))
        out._metadata = collections.OrderedDict((strip(k), v) for k, v in meta.items())  # type: ignore[attr-defined]
    return out


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(
                    isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            stripped = ""
            for prefix in _PREFIXES:
                if all(k.startswith(prefix) for k in tensors):
                    tensors = {k[len(prefix):]: v for k, v in tensors.items()}
                    stripped = prefix
            return _with_metadata(tensors, obj, stripped)
        found = sorted(map(str, obj))[:8]
        raise ValueError(
            f"{path} holds no tensors at the top level nor under {list(_WRAPPER_KEYS)}; found "
            f"keys {found}. Expected a state dict (name -> tensor)."
        )
    raise ValueError(f"{path} holds a {type(obj).__name__}; expected a state dict (name -> tensor).")


def check_finite(state: Mapping[str, torch.Tensor], path: str | Path, *, allow_nonfinite: bool = False) -> None:
    """Refuse weights with NaN or Inf values, naming the file and the first bad tensor.

    Parameters
    ----------
    state : mapping of str to Tensor
    path : path
        Named in the message.
    allow_nonfinite : bool
        Warn (:class:`RuntimeWarning`, with the count of bad tensors) instead of raising.

    Raises
    ------
    ValueError
        When a floating-point tensor holds a non-finite value and ``allow_nonfinite`` is False.
    """
    bad = [(k, int((~torch.isfinite(v)).sum())) for k, v in state.items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not bad:
        return
    name, count = bad[0]
    text = (f"{path}: tensor {name!r} holds {count} non-finite value(s) (NaN or Inf), and "
            f"{len(bad)} tensor(s) in all; training diverged or the file is corrupt")
    if not allow_nonfinite:
        raise ValueError(f"{text}. Its metrics would be NaN; pass allow_nonfinite=True "
                         f"(CLI: --allow-nonfinite) to probe it anyway.")
    warnings.warn(f"{text}; probing anyway (allow_nonfinite).", RuntimeWarning, stacklevel=3)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file safely into a state dict.

    Parameters
    ----------
    path : path
        ``.safetensors``, or ``.pt`` / ``.pth`` / ``.bin`` read with
        ``torch.load(weights_only=True)``.

    Returns
    -------
    dict of str to Tensor
        Wrappers removed, ``module.`` / ``_orig_mod.`` prefixes stripped; a torch file's
        ``_metadata`` (module versions) is kept on the returned OrderedDict.

    Raises
    ------
    ValueError
        Naming the file: missing, a folder, unknown suffix, unreadable, a pickle that would run
        code (naming the global it wanted), a whole pickled module, a TorchScript archive.
    """
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        raise ValueError(f"Checkpoint {path} is a directory; expected a weights file "
                         f"({', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}).")
    if not path.is_file():
        raise ValueError(f"Checkpoint file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _read_safetensors(path)
    if suffix in TORCH_SUFFIXES:
        return _unwrap(_read_torch(path), path)
    raise ValueError(
        f"Unknown checkpoint file type {path.name!r}; expected one of "
        f"{list(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}."
    )


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path | str) -> None:
    """``model.load_state_dict(state)`` with an error that lists every kind of misfit."""
    own = model.state_dict()
    # BatchNorm step counters do not affect the forward pass; old checkpoints lack them.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        def show(label: str, items: list[str]) -> str:
            more = f", ... ({len(items) - 5} more)" if len(items) > 5 else ""
            return f"{len(items)} {label}" + (f" [{', '.join(items[:5])}{more}]" if items else "")

        raise ValueError(
            f"The state dict in {path} does not fit the architecture: "
            f"{show('missing keys', missing)}; {show('unexpected keys', unexpected)}; "
            f"{show('shape mismatches', mismatched)}. Check --arch (and the number of classes)."
        )
    if getattr(state, "_metadata", None) is None:
        # safetensors files have no module versions: assume the current ones (what
        # torch.save(model.state_dict()) writes); a different layout shows as a misfit above.
        state = collections.OrderedDict(state)
        state._metadata = getattr(own, "_metadata", None)  # type: ignore[attr-defined]
    model.load_state_dict(state, strict=False)


# --------------------------------------------------------------------------------------------
# architectures and presets


def _classifier_key(model: nn.Module) -> tuple[str, int] | None:
    """Key of the final classifier's weight and its number of outputs."""
    head = None
    if hasattr(model, "get_classifier"):
        clf = model.get_classifier()
        head = next((n for n, m in model.named_modules() if m is clf and isinstance(m, nn.Linear)), None)
    if head is None:
        head = next((n for n, m in reversed(list(model.named_modules())) if isinstance(m, nn.Linear)), None)
    if head is None:
        return None
    return f"{head}.weight", model.get_submodule(head).out_features


def _build(arch: str, builder: Any, *args: Any) -> nn.Module:
    """``builder(*args)``; a crash becomes one line naming the architecture."""
    try:
        return builder(*args)
    except Exception as e:  # noqa: BLE001 - a library's bug or a bad factory: one line
        raise ValueError(f"The architecture {arch!r} failed while building: "
                         f"{type(e).__name__}: {_first_line(e)}") from e


def _num_classes(arch: str, builder: Any, state: dict[str, torch.Tensor] | None
                 ) -> tuple[nn.Module, int | None]:
    """Build the model with as many classes as the state dict's classifier has."""
    if state is None:   # nothing to match: build once, for real
        model = _build(arch, builder, None)
        found = _classifier_key(model)
        return model, found[1] if found else None
    try:
        # A skeleton on the meta device finds the classifier without allocating or initialising.
        with torch.device("meta"):
            found = _classifier_key(builder(None))
    except Exception:  # noqa: BLE001 - some inits (RegNet) read tensor values: build for real
        model = _build(arch, builder, None)
        found = _classifier_key(model)
        if found is None or found[0] not in state:
            return model, found[1] if found else None
    if found is None or found[0] not in state:
        return _build(arch, builder, None), found[1] if found else None
    n = int(state[found[0]].shape[0])
    return _build(arch, builder, n), n


def _parse_arch(arch: str) -> tuple[str, str]:
    if not isinstance(arch, str) or ":" not in arch and arch != "zoo":
        raise ValueError(f"The 'arch' parameter must be one of {ARCH_FORMS}. Got {arch!r} instead.")
    if arch == "zoo":
        return "zoo", ""
    kind, _, name = arch.rpartition(":") if arch.count(":") > 1 else arch.partition(":")
    if kind in ("torchvision", "timm"):
        if not name:
            raise ValueError(f"The 'arch' parameter must be one of {ARCH_FORMS}. Got {arch!r} instead.")
        return kind, name
    if not kind or not name.isidentifier():
        raise ValueError(f"The 'arch' parameter must be one of {ARCH_FORMS}. Got {arch!r} instead.")
    return "factory", arch


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    return f" Did you mean {close}?" if close else ""


def _torchvision(name: str, state: dict[str, torch.Tensor] | None) -> tuple[nn.Module, InputSpec, dict[str, Any]]:
    tvm = import_torchvision().models

    known = tvm.list_models(module=tvm)
    if name not in known:
        raise ValueError(
            f"Unknown torchvision classification model {name!r}.{_suggest(name, known)} "
            f"See torchvision.models.list_models(module=torchvision.models)."
        )

    def build(n: int | None) -> nn.Module:
        return tvm.get_model(name, weights=None, **({} if n is None else {"num_classes": n}))

    model, n_classes = _num_classes(f"torchvision:{name}", build, state)
    weights = tvm.get_model_weights(name).DEFAULT
    t = weights.transforms()
    spec = InputSpec(size=int(t.crop_size[0]), channels=3, mean=t.mean, std=t.std,
                     interpolation=t.interpolation.value,
                     source=f"torchvision weights metadata ({weights})")
    preset = {"library": "torchvision", "weights": str(weights), "resize_size": int(t.resize_size[0]),
              "crop_pct": t.crop_size[0] / t.resize_size[0], "antialias": bool(t.antialias)}
    if n_classes == 1000:
        preset["class_names"] = list(weights.meta["categories"])
    return model, spec, preset


def _timm(name: str, state: dict[str, torch.Tensor] | None) -> tuple[nn.Module, InputSpec, dict[str, Any]]:
    import timm
    from timm.data import ImageNetInfo, resolve_data_config

    if not timm.is_model(name):
        raise ValueError(f"Unknown timm model {name!r}.{_suggest(name, timm.list_models())} "
                         f"See timm.list_models().")

    def build(n: int | None) -> nn.Module:
        return timm.create_model(name, pretrained=False, **({} if n is None else {"num_classes": n}))

    model, n_classes = _num_classes(f"timm:{name}", build, state)
    cfg = resolve_data_config({}, model=model)
    interp = cfg["interpolation"] if cfg["interpolation"] in INTERPOLATIONS else "bicubic"
    c, h, _ = cfg["input_size"]
    tag = getattr(model, "pretrained_cfg", {}).get("tag")
    spec = InputSpec(size=int(h), channels=int(c), mean=cfg["mean"], std=cfg["std"],
                     interpolation=interp,
                     source=f"timm pretrained config ({name}{'.' + tag if tag else ''})")
    preset = {"library": "timm", "config": f"{name}.{tag}" if tag else name,
              "resize_size": math.floor(h / cfg["crop_pct"]), "crop_pct": float(cfg["crop_pct"]),
              "crop_mode": cfg.get("crop_mode", "center")}
    if n_classes == 1000:
        info = ImageNetInfo()
        preset["class_names"] = [info.index_to_description(i) for i in range(1000)]
    return model, spec, preset


def _factory(spec: str) -> nn.Module:
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py") or "/" in target or "\\" in target:
        file = Path(target).expanduser().resolve()
        if not file.is_file():
            raise ValueError(f"The factory file {file} named by arch {spec!r} does not exist.")
        mod_spec = importlib.util.spec_from_file_location(f"_bnprobe_factory_{file.stem}", file)
        module = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
        sys.modules[mod_spec.name] = module  # type: ignore[union-attr]
        try:
            mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as e:  # noqa: BLE001 - the user's file fails: one line naming it
            raise ValueError(f"The factory file {file} named by arch {spec!r} failed while "
                             f"importing: {type(e).__name__}: {_first_line(e)}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ValueError(f"Cannot import module {target!r} named by arch {spec!r}: {e}.") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"{target!r} has no callable {attr!r} (arch {spec!r}).")
    model = _build(spec, fn)
    if not isinstance(model, nn.Module):
        raise ValueError(f"The factory {spec!r} returned a {type(model).__name__}, not an nn.Module.")
    return model


def _first_conv_channels(model: nn.Module) -> int | None:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else int(conv.in_channels)


def _factory_spec(model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None,
                  size: int | None) -> InputSpec:
    channels = len(mean) if mean is not None else _first_conv_channels(model) or 3
    if mean is None or std is None:
        if channels != 3:
            raise ValueError(
                f"The model's first convolution takes {channels} channels; the ImageNet defaults "
                f"are for 3. Give --mean and --std with {channels} values each."
            )
    return InputSpec(size=size or 224, channels=channels,
                     mean=IMAGENET_MEAN if mean is None else mean,
                     std=IMAGENET_STD if std is None else std,
                     source="flags" if (mean or std or size) else "default (ImageNet)")


def _override(spec: InputSpec, preset: dict[str, Any], mean: Sequence[float] | None,
              std: Sequence[float] | None, size: int | None) -> InputSpec:
    if mean is None and std is None and size is None:
        return spec
    if size is not None and size != spec.size:
        preset["resize_size"] = math.floor(size / preset.get("crop_pct", 1.0) + 1e-9)
    changes = {k: v for k, v in (("mean", mean), ("std", std), ("size", size)) if v is not None}
    return dataclasses.replace(spec, **changes, source=f"{spec.source} + flags {sorted(changes)}")


def _design(arch_name: str) -> dict[str, Any]:
    for prefix, d in _KNOWN_DESIGNS:
        if arch_name.startswith(prefix):
            return {**d, "seed": None, "design": arch_name}
    return {"bottleneck_act": "unknown", "expand_ratio": None, "shortcut": "unknown",
            "seed": None, "design": arch_name}


# --------------------------------------------------------------------------------------------
# main entry


def load_checkpoint(
    spec: str | Path | None,
    *,
    arch: str | None = None,
    input_spec: InputSpec | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    size: int | None = None,
    allow_factory: bool = True,
    allow_nonfinite: bool = False,
    seed: int = 0,
) -> LoadedModel:
    """Load a checkpoint safely (see module docstring) with its input spec.

    Parameters
    ----------
    spec : str, path or None
        A zoo name, a weights file, or (no file) an architecture string such as
        ``"torchvision:mobilenet_v2"`` for seeded random weights.
    arch : str, optional
        Architecture of a bare state dict, one of :data:`ARCH_FORMS`. Not needed for zoo
        names and for files with a zoo card beside them.
    input_spec : InputSpec, optional
        Replaces the preset entirely.
    mean, std : sequence of float, optional
        Override the preset's normalisation (one value per channel).
    size : int, optional
        Override the preset's input size.
    allow_factory : bool, default=True
        Accept ``package.module:FACTORY`` / ``path.py:FACTORY`` architectures, which import
        and run that code. Pass False wherever the string comes from someone else (the
        dashboard does): only zoo, torchvision and timm architectures are then accepted.
    allow_nonfinite : bool, default=False
        Warn instead of refusing weights with NaN or Inf values.
    seed : int
        Seed for random weights (no file) and the random init that a state dict then replaces.

    Returns
    -------
    LoadedModel

    Raises
    ------
    ValueError
        Unknown zoo name (lists the available ones), missing or unsafe file, invalid card,
        bad ``arch``, a refused factory, an architecture that fails to build, sha256 mismatch
        with the card, non-finite weights, a state dict that does not fit (lists missing and
        unexpected keys and shape mismatches).

    Examples
    --------
    >>> lm = load_checkpoint("torchvision:mobilenet_v2")
    >>> lm.input_spec.size, lm.input_spec.interpolation
    (224, 'bilinear')
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loaded = _load(spec, arch=arch, mean=mean, std=std, size=size, allow_factory=allow_factory,
                       allow_nonfinite=allow_nonfinite)
    if input_spec is not None:
        loaded.input_spec = input_spec
        loaded.preset["resize_size"] = math.floor(input_spec.size / loaded.preset.get("crop_pct", 1.0) + 1e-9)
    loaded.model.eval()
    return loaded


def card_beside(path: str | Path) -> dict[str, Any] | None:
    """The zoo card ``<stem>.json`` beside a weights file (validated), None if there is none.

    A JSON file there without an ``architecture`` key (another tool's) is ignored; one with it
    must pass :func:`validate_card`.
    """
    card_path = Path(path).with_suffix(".json")
    if not card_path.is_file():
        return None
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return read_card(card_path)  # raises with the file named
    if not (isinstance(card, dict) and "architecture" in card):
        return None
    validate_card(card, card_path)
    return card


def _load(spec: str | Path | None, *, arch: str | None, mean: Sequence[float] | None,
          std: Sequence[float] | None, size: int | None, allow_factory: bool,
          allow_nonfinite: bool) -> LoadedModel:
    if spec is None and arch is None:
        raise ValueError("load_checkpoint needs a checkpoint (a zoo name or a weights file) or, for "
                         f"random weights, an architecture ({ARCH_FORMS}).")
    text = "" if spec is None else str(spec)
    path = Path(text).expanduser() if text else None
    if path is not None and path.is_dir():
        raise ValueError(f"Checkpoint {path.resolve()} is a directory; expected a zoo name or a "
                         f"weights file (.safetensors, .pt, .pth, .bin).")
    is_file = path is not None and path.is_file()
    if not is_file and text and "/" not in text and (_checkpoint_dir() / f"{text}.json").is_file():
        if arch not in (None, "zoo"):
            raise ValueError(f"{text!r} is a zoo checkpoint; it takes no arch (got {arch!r}).")
        card_path = _checkpoint_dir() / f"{text}.json"
        card = read_card(card_path)
        weights = _checkpoint_dir() / card.get("weights_file", f"{text}.safetensors")
        loaded = _load_zoo(card, weights, card_path, source="zoo", allow_nonfinite=allow_nonfinite)
        loaded.input_spec = _override(loaded.input_spec, loaded.preset, mean, std, size)
        return loaded
    if not is_file:
        if text and ":" in text and arch is None and not text.lower().endswith(
                SAFETENSORS_SUFFIXES + TORCH_SUFFIXES):
            arch, path = text, None
        elif text or arch is None:
            from probes.catalogue import list_checkpoints

            zoo = [c["name"] for c in list_checkpoints(_checkpoint_dir())]
            raise ValueError(
                f"{text!r} is neither a zoo checkpoint nor an existing file. Available zoo "
                f"checkpoints: {zoo}. Files must be .safetensors, .pt, .pth or .bin; for random "
                f"weights give an architecture ({ARCH_FORMS})."
            )
    if arch is not None and arch != "zoo":
        kind, name = _parse_arch(arch)
        if kind == "factory" and not allow_factory:
            raise ValueError(
                f"The 'arch' parameter {arch!r} names code to import and run (a user factory), "
                f"which is disabled here. Choose a zoo, torchvision:NAME or timm:NAME architecture.")
    state: dict[str, torch.Tensor] | None = None
    if path is not None:
        path = path.resolve()
        card = card_beside(path) if arch in (None, "zoo") else None
        if card is not None:
            loaded = _load_zoo(card, path, path.with_suffix(".json"), source=str(path),
                               allow_nonfinite=allow_nonfinite)
            loaded.input_spec = _override(loaded.input_spec, loaded.preset, mean, std, size)
            return loaded
        state = read_weights(path)
        if arch is None:
            raise ValueError(
                f"{path} is a bare state dict without a zoo card ({path.with_suffix('.json').name}) "
                f"beside it; name its architecture with arch (CLI: --arch), one of {ARCH_FORMS}."
            )
        check_finite(state, path, allow_nonfinite=allow_nonfinite)
    assert arch is not None
    kind, name = _parse_arch(arch)
    if kind == "zoo":
        raise ValueError(f"arch 'zoo' needs a zoo card {path.with_suffix('.json') if path else ''} "
                         f"beside the weights file, or a zoo name.")
    if kind == "torchvision":
        model, in_spec, preset = _torchvision(name, state)
        arch_str = f"torchvision:{name}"
    elif kind == "timm":
        model, in_spec, preset = _timm(name, state)
        arch_str = f"timm:{name}"
    else:
        model = _factory(name)
        in_spec = _factory_spec(model, mean, std, size)
        preset = {"library": "flags", "resize_size": in_spec.size, "crop_pct": 1.0}
        arch_str = f"factory:{name}"
        name = name.rpartition(":")[2]
    class_names = preset.pop("class_names", None)
    if kind != "factory":
        in_spec = _override(in_spec, preset, mean, std, size)
    if state is not None:
        _load_into(model, state, path)  # type: ignore[arg-type]
    return LoadedModel(
        model=model.eval(),
        name=path.stem if path is not None else arch_str,
        source=str(path) if path is not None else f"{arch_str} (random weights)",
        arch=arch_str, input_spec=in_spec,
        design=_design(name if kind != "factory" else "unknown"),
        sha256=sha256_file(path) if path is not None else None,
        class_names=class_names, preset=preset,
    )


# --------------------------------------------------------------------------------------------
# prediction sanity check


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names in index order, from torchvision's weights metadata
    (shipped with torchvision, nothing downloaded)."""
    tvm = import_torchvision().models

    return list(tvm.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def load_images(image_paths: Sequence[str | Path], spec: InputSpec, *,
                resize_size: int | None = None) -> torch.Tensor:
    """Read image files and apply the evaluation transform of ``spec``.

    Each image is converted to the model's channels (RGB or grayscale), its shorter side
    resized to ``resize_size`` (default ``spec.size``) with ``spec.interpolation``
    (antialiased), centre-cropped to ``spec.size``, scaled to [0, 1] and normalised with
    ``spec.mean`` / ``spec.std`` — the same steps as torchvision's ``weights.transforms()`` and
    timm's evaluation transform.

    Returns
    -------
    Tensor of shape (n_images, spec.channels, spec.size, spec.size), float32.

    Raises
    ------
    ValueError
        Naming the file that is missing, not a readable image, or over the pixel limit
        (:func:`probes.preprocess.open_image`).
    """
    from probes.preprocess import open_image, transform_image

    if spec.channels not in (1, 3):
        raise ValueError(f"Image files can feed 1- or 3-channel models; this one takes {spec.channels}.")
    mode = "RGB" if spec.channels == 3 else "L"
    out = [transform_image(open_image(p, mode), spec, resize_size=resize_size) for p in image_paths]
    return torch.stack(out)


@torch.no_grad()
def predict(loaded: LoadedModel, image_paths: Sequence[str | Path], *,
            topk: int = 5) -> list[list[tuple[str, float]]]:
    """Top-``topk`` classes with softmax probabilities for each image file.

    Class names: the model's own (zoo card, torchvision/timm ImageNet metadata) when they
    match the number of outputs, else ImageNet names for 1,000 outputs, else the indices.

    Returns
    -------
    list (one per image) of lists of (class name, probability), most probable first.
    """
    if not isinstance(topk, int) or topk < 1:
        raise ValueError(f"The 'topk' parameter of predict must be an int >= 1. Got {topk!r} instead.")
    if not image_paths:
        raise ValueError("predict needs at least one image file.")
    x = load_images(image_paths, loaded.input_spec, resize_size=loaded.preset.get("resize_size"))
    model = loaded.model.eval()
    logits = torch.cat([model(x[i:i + 32]) for i in range(0, len(x), 32)])
    if logits.ndim != 2:
        raise ValueError(f"predict needs a classifier with outputs of shape (N, classes); "
                         f"{loaded.name} gives {tuple(logits.shape)}.")
    n_out = logits.shape[1]
    names = loaded.class_names
    if names is None or len(names) != n_out:
        names = imagenet_class_names() if n_out == 1000 else [str(i) for i in range(n_out)]
    prob, idx = logits.float().softmax(1).topk(min(topk, n_out), dim=1)
    return [[(names[j], float(p)) for p, j in zip(pr.tolist(), ix.tolist())] for pr, ix in zip(prob, idx)]


def format_predictions(loaded: LoadedModel, image_paths: Sequence[str | Path],
                       predictions: Sequence[Sequence[tuple[str, float]]]) -> str:
    """Plain-text report of :func:`predict`: a header with the model and its input spec, then
    the ranked classes of each image."""
    s = loaded.input_spec
    lines = [
        f"model: {loaded.name} (arch {loaded.arch}; weights {loaded.source})",
        f"input: {s.size} px, {s.channels} channel(s), mean {list(s.mean)}, std {list(s.std)}, "
        f"{s.interpolation}, resize {loaded.preset.get('resize_size', s.size)} + centre crop "
        f"(from {s.source})",
    ]
    for path, preds in zip(image_paths, predictions):
        lines.append(f"{path}")
        lines.extend(f"  {rank}. {prob:7.2%}  {name}" for rank, (name, prob) in enumerate(preds, 1))
    return "\n".join(lines)
