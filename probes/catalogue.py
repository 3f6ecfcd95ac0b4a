"""The catalogue of shipped checkpoints: their cards, and one table of them.

Two words, two things: the *zoo* is the architecture (:mod:`probes.zoo` builds the paper's
MobileNetV2; a card's ``architecture.family`` is ``"zoo"``), and the *catalogue* is the set of
trained checkpoints shipped in :data:`checkpoints.CHECKPOINT_DIR`: ``<name>.safetensors`` with a
JSON card ``<name>.json`` written by :func:`probes.train.train` and validated by
:func:`probes.loading.read_card`. ``bnprobe checkpoints`` prints :func:`checkpoint_table` and
:func:`accuracy_summary`; the dashboard, the report and ``checkpoints/README.md`` read the same
table.

Examples
--------
>>> card = {"name": "digits-linear-s0", "design": "linear", "seed": 0, "epochs": 30,
...         "architecture": {"family": "zoo", "config": {"bottleneck_act": "linear",
...                                                      "expand_ratio": 6, "shortcut": "bottleneck"}},
...         "dataset": {"name": "digits"}, "n_params": 81610, "train_accuracy": 1.0,
...         "test_accuracy": 0.9972, "train_seconds": 130.0}
>>> checkpoint_table([card])[["checkpoint", "dataset", "design", "seed", "test_accuracy"]].to_dict("records")
[{'checkpoint': 'digits-linear-s0', 'dataset': 'digits', 'design': 'linear', 'seed': 0, 'test_accuracy': 0.9972}]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CATALOGUE_COLUMNS", "SUMMARY_COLUMNS", "accuracy_summary", "checkpoint_table", "list_checkpoints"]

#: Columns of :func:`checkpoint_table`, in order.
CATALOGUE_COLUMNS: tuple[str, ...] = (
    "checkpoint", "dataset", "design", "bottleneck_act", "expand_ratio", "shortcut", "seed", "epochs",
    "n_params", "train_accuracy", "test_accuracy", "train_seconds",
)

#: Columns of :func:`accuracy_summary`, in order.
SUMMARY_COLUMNS: tuple[str, ...] = ("dataset", "design", "n_seeds", "test_accuracy_mean", "test_accuracy_std")


def list_checkpoints(directory: str | Path | None = None) -> list[dict[str, Any]]:
    """Cards of the shipped checkpoints, sorted by name.

    Parameters
    ----------
    directory : str or Path, optional
        Folder of ``<name>.json`` cards; :data:`checkpoints.CHECKPOINT_DIR` by default.

    Returns
    -------
    cards : list of dict
        Every JSON file of the folder that is a valid card (:func:`probes.loading.read_card`);
        other JSON files there (not cards) are left out.
    """
    from probes.loading import read_card

    if directory is None:
        from checkpoints import CHECKPOINT_DIR

        directory = CHECKPOINT_DIR
    cards = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            cards.append(read_card(path))
        except ValueError:
            continue
    return sorted(cards, key=lambda c: c.get("name", ""))


def _row(card: Mapping[str, Any]) -> dict[str, Any]:
    cfg = (card.get("architecture") or {}).get("config") or {}
    act = cfg.get("bottleneck_act", "linear")
    return {
        "checkpoint": card.get("name"), "dataset": (card.get("dataset") or {}).get("name"),
        "design": str(card.get("design", act if isinstance(act, str) else "schedule")),
        "bottleneck_act": act if isinstance(act, str) else "schedule",
        "expand_ratio": cfg.get("expand_ratio", 6), "shortcut": cfg.get("shortcut", "bottleneck"),
        "seed": card.get("seed"), "epochs": card.get("epochs"), "n_params": card.get("n_params"),
        "train_accuracy": card.get("train_accuracy"), "test_accuracy": card.get("test_accuracy"),
        "train_seconds": card.get("train_seconds"),
    }


def checkpoint_table(cards: Iterable[Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """One row per checkpoint card.

    Parameters
    ----------
    cards : iterable of dict, optional
        Cards as read by :func:`probes.loading.read_card`; the shipped ones
        (:func:`list_checkpoints`) by default.

    Returns
    -------
    table : DataFrame
        Columns :data:`CATALOGUE_COLUMNS`, one row per card in the given order.
        ``bottleneck_act`` is ``"schedule"`` for a per-block list; ``design`` is the card's
        ``design`` (its bottleneck activation when it has none); ``expand_ratio`` and
        ``shortcut`` take the zoo config's defaults (6, ``"bottleneck"``) when absent; keys the
        card lacks (``epochs``, accuracies, ``train_seconds`` of a third-party card) are
        missing values (None / NaN). Accuracies are fractions in [0, 1].
    """
    import pandas as pd

    rows = [_row(c) for c in (list_checkpoints() if cards is None else cards)]
    return pd.DataFrame(rows, columns=list(CATALOGUE_COLUMNS))


def accuracy_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy per (dataset, design): seed count, mean and sample standard deviation.

    Parameters
    ----------
    table : DataFrame
        :func:`checkpoint_table` (columns ``dataset``, ``design``, ``test_accuracy`` used).

    Returns
    -------
    summary : DataFrame
        Columns :data:`SUMMARY_COLUMNS`, groups in order of first appearance.
        ``n_seeds`` counts the checkpoints with a test accuracy; ``test_accuracy_std`` is the
        sample standard deviation ``sqrt(sum (a_i - mean)^2 / (n - 1))`` (NaN for one seed).

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"dataset": ["digits"] * 3, "design": ["linear", "linear", "relu6"],
    ...                   "test_accuracy": [0.99, 0.97, 0.98]})
    >>> accuracy_summary(t).round(4).to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
    [{'dataset': 'digits', 'design': 'linear', 'n_seeds': 2, 'test_accuracy_mean': 0.98, 'test_accuracy_std': 0.0141},
     {'dataset': 'digits', 'design': 'relu6', 'n_seeds': 1, 'test_accuracy_mean': 0.98, 'test_accuracy_std': nan}]
    """
    import pandas as pd

    if table.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    acc = table.assign(test_accuracy=pd.to_numeric(table["test_accuracy"], errors="coerce"))
    return (acc.groupby(["dataset", "design"], sort=False)["test_accuracy"]
            .agg(n_seeds="count", test_accuracy_mean="mean", test_accuracy_std="std")
            .reset_index())
