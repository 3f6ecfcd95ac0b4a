"""The one vocabulary of capture-point names: ``blocks.{i}.{suffix}``.

Every part of the toolkit that writes, reads or orders a capture-point name goes through this
module: discovery names the points (:mod:`probes.blocks`), the analysis groups and sorts them,
the dashboard parses them for its pickers. The grammar (docs/design.md "Capture points")::

    name   := "blocks." block "." suffix
    block  := a non-negative integer (execution order over the whole network)
    suffix := stage | stage ".pre"        (input and output have no ".pre")
    stage  := "input" | "expand" | "depthwise" | "project" | "output"

This module holds names only, no torch: which points a given network has is found by
:func:`probes.blocks.capture_points`, and which of them a capture reads by
:func:`probes.capture.points.select_points`.

Examples
--------
>>> parse_point("blocks.3.expand.pre")
PointName(block=3, stage='expand', pre=True)
>>> point_name(3, "project")
'blocks.3.project'
>>> sorted(["blocks.10.input", "blocks.2.output", "blocks.2.expand", "blocks.2.expand.pre"],
...        key=point_sort_key)
['blocks.2.expand.pre', 'blocks.2.expand', 'blocks.2.output', 'blocks.10.input']
"""

from __future__ import annotations

import fnmatch
import re
from typing import NamedTuple

__all__ = [
    "POINT_SUFFIXES",
    "PRE",
    "PointName",
    "STAGES",
    "is_point_name",
    "parse_point",
    "pattern_can_match",
    "point_block",
    "point_name",
    "point_sort_key",
    "point_suffix",
    "suffix_sort_key",
]

#: Capture stages of one block in execution order (``depthwise_first`` blocks run their
#: depthwise conv first, but are listed in this order too).
STAGES: tuple[str, ...] = ("input", "expand", "depthwise", "project", "output")

#: Suffix of the value after conv + BN, before the stage's activation.
PRE = ".pre"

#: Capture-point suffixes of one block in execution order, ``.pre`` before its stage.
POINT_SUFFIXES: tuple[str, ...] = (
    "input", "expand.pre", "expand", "depthwise.pre", "depthwise", "project.pre", "project",
    "output",
)

_RANK = {suffix: i for i, suffix in enumerate(POINT_SUFFIXES)}
_POINT_RE = re.compile(r"^blocks\.(0|[1-9]\d*)\.(" + "|".join(re.escape(s) for s in POINT_SUFFIXES) + r")$")


class PointName(NamedTuple):
    """A capture-point name, parsed.

    Attributes
    ----------
    block : int
        Block index in execution order.
    stage : str
        One of :data:`STAGES`.
    pre : bool
        True for the ``.pre`` point (before the stage's activation).
    """

    block: int
    stage: str
    pre: bool

    @property
    def suffix(self) -> str:
        """``stage`` or ``stage + ".pre"``.

        >>> PointName(2, "depthwise", True).suffix
        'depthwise.pre'
        """
        return self.stage + PRE if self.pre else self.stage

    @property
    def name(self) -> str:
        """The full name, ``blocks.{block}.{suffix}``.

        >>> PointName(2, "depthwise", False).name
        'blocks.2.depthwise'
        """
        return point_name(self.block, self.suffix)


def point_name(block: int, suffix: str) -> str:
    """Format the name of one capture point.

    Parameters
    ----------
    block : int
        Block index, >= 0.
    suffix : str
        One of :data:`POINT_SUFFIXES`.

    Returns
    -------
    name : str
        ``"blocks.{block}.{suffix}"``.

    Raises
    ------
    ValueError
        If ``block`` is not an int >= 0 or ``suffix`` is not a point suffix.

    Examples
    --------
    >>> point_name(0, "depthwise.pre")
    'blocks.0.depthwise.pre'
    >>> point_name(0, "output.pre")
    Traceback (most recent call last):
    ...
    ValueError: The 'suffix' parameter of point_name must be one of ['input', 'expand.pre', \
'expand', 'depthwise.pre', 'depthwise', 'project.pre', 'project', 'output']. Got 'output.pre' instead.
    """
    if isinstance(block, bool) or not isinstance(block, int) or block < 0:
        raise ValueError(f"The 'block' parameter of point_name must be an int >= 0. Got {block!r} instead.")
    if suffix not in _RANK:
        raise ValueError(f"The 'suffix' parameter of point_name must be one of {list(POINT_SUFFIXES)}. "
                         f"Got {suffix!r} instead.")
    return f"blocks.{block}.{suffix}"


def is_point_name(name: object) -> bool:
    """True when ``name`` is a capture-point name of the grammar (not a glob).

    >>> is_point_name("blocks.3.project"), is_point_name("blocks.3.project.conv"), is_point_name("stem")
    (True, False, False)
    """
    return isinstance(name, str) and _POINT_RE.match(name) is not None


def parse_point(name: str) -> PointName:
    """Parse a capture-point name.

    Parameters
    ----------
    name : str
        ``"blocks.{i}.{suffix}"`` with a suffix from :data:`POINT_SUFFIXES`.

    Returns
    -------
    PointName
        ``(block, stage, pre)``.

    Raises
    ------
    ValueError
        If ``name`` does not follow the grammar.

    Examples
    --------
    >>> parse_point("blocks.12.output")
    PointName(block=12, stage='output', pre=False)
    >>> parse_point("block.1.input")
    Traceback (most recent call last):
    ...
    ValueError: 'block.1.input' is not a capture-point name: expected 'blocks.{i}.{suffix}' with a \
suffix in ['input', 'expand.pre', 'expand', 'depthwise.pre', 'depthwise', 'project.pre', 'project', 'output'].
    """
    m = _POINT_RE.match(name) if isinstance(name, str) else None
    if m is None:
        raise ValueError(f"{name!r} is not a capture-point name: expected 'blocks.{{i}}.{{suffix}}' with a "
                         f"suffix in {list(POINT_SUFFIXES)}.")
    suffix = m.group(2)
    return PointName(int(m.group(1)), suffix.removesuffix(PRE), suffix.endswith(PRE))


def point_block(name: str) -> int:
    """The block index of a capture-point name (ValueError if it is not one).

    >>> point_block("blocks.7.depthwise")
    7
    """
    return parse_point(name).block


def point_suffix(name: str) -> str:
    """The name without its ``blocks.{i}.`` prefix (ValueError if it is not a point name).

    >>> point_suffix("blocks.3.expand.pre")
    'expand.pre'
    """
    return parse_point(name).suffix


def point_sort_key(name: str) -> tuple[int, int, str]:
    """Sort key that puts capture points in execution order.

    Parameters
    ----------
    name : str
        Any string; names outside the grammar sort first (block -1), by themselves.

    Returns
    -------
    key : tuple of (int, int, str)
        ``(block, rank of the suffix in POINT_SUFFIXES, name)``.

    Examples
    --------
    >>> point_sort_key("blocks.4.project.pre"), point_sort_key("stem")
    ((4, 5, 'blocks.4.project.pre'), (-1, 8, 'stem'))
    """
    m = _POINT_RE.match(name) if isinstance(name, str) else None
    if m is None:
        return -1, len(POINT_SUFFIXES), str(name)
    return int(m.group(1)), _RANK[m.group(2)], name


def suffix_sort_key(suffix: str) -> tuple[int, str]:
    """Sort key that puts point suffixes (``"expand.pre"``) in execution order; others last.

    >>> sorted(["output", "odd", "expand", "expand.pre"], key=suffix_sort_key)
    ['expand.pre', 'expand', 'output', 'odd']
    """
    return _RANK.get(suffix, len(POINT_SUFFIXES)), str(suffix)


def pattern_can_match(pattern: str) -> bool:
    """True when an ``fnmatch`` glob (or exact name) can match some capture-point name.

    Used to reject a misspelt ``points`` setting before any network is built: the pattern is
    tried against every suffix of blocks 0-999.

    Examples
    --------
    >>> pattern_can_match("blocks.*.project*"), pattern_can_match("blocks.*.projcet")
    (True, False)
    """
    return any(fnmatch.fnmatchcase(f"blocks.{i}.{s}", pattern) for i in range(1000) for s in POINT_SUFFIXES)
