"""Probe a checkpoint: upload weights (``.safetensors``, ``.pt``, ``.pth``; loaded weights-only,
never unpickled as code) or pick a torchvision / timm architecture with random weights, run the
study on a dataset, and see the Overview and Block-explorer views for it.

Nothing a visitor types or uploads is imported or run: architectures come from a fixed list
(:func:`architecture_choices`: torchvision's and timm's registered names) or from an uploaded
zoo card, which is data validated against a schema; user factories
(``package.module:build``, ``path.py:build``), which the CLI accepts for the user's own code,
are refused here (``load_checkpoint(..., allow_factory=False)``), and any architecture not in
the list is refused before loading even if it reaches the page's state some other way.

Bad files end in a readable message in the page (the loader's ValueError names the file and
what was expected), never in a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
import time
from pathlib import Path
from typing import Any

import streamlit as st

from dashboard import parts, state

__all__ = ["ARCHITECTURES", "architecture_choices", "checked_architecture", "load_upload", "render",
           "run_probe"]

#: Architectures listed first (the families the toolkit is about); every other registered
#: torchvision and timm classification model follows in :func:`architecture_choices`.
ARCHITECTURES = ("torchvision:mobilenet_v2", "torchvision:mobilenet_v3_small", "torchvision:mobilenet_v3_large",
                 "torchvision:efficientnet_b0", "torchvision:mnasnet0_5", "timm:mobilenetv2_100",
                 "timm:efficientnet_b0")
_CARD = "from its zoo card (.json, upload it below)"
_RESULT_KEY = "probe-result"


@functools.cache
def architecture_choices() -> tuple[str, ...]:
    """Every architecture the page offers: :data:`ARCHITECTURES`, then the other registered
    torchvision classification models and timm models (names only; nothing is built)."""
    import timm
    from probes._lazy import import_torchvision

    import_torchvision()  # without torch's compiler stack
    import torchvision.models as tvm

    names = [f"torchvision:{n}" for n in sorted(tvm.list_models(module=tvm))]
    names += [f"timm:{n}" for n in timm.list_models()]
    return tuple(dict.fromkeys([*ARCHITECTURES, *names]))


def checked_architecture(arch: str | None) -> str | None:
    """``arch`` if it is one of :func:`architecture_choices` (or None: from a card).

    Raises
    ------
    ValueError
        For anything else: the page never passes a free string on to the loader.
    """
    if arch is None or arch in architecture_choices():
        return arch
    raise ValueError(f"Architecture {str(arch)[:80]!r} is not one of the listed torchvision / timm "
                     f"architectures; pick one from the list (the dashboard runs no other code).")


def load_upload(weights: Any, card: Any | None, arch: str | None) -> Any:
    """Load an uploaded checkpoint through :func:`probes.loading.load_checkpoint`.

    The upload is written to a temporary folder under its own file name (and the card, if any,
    beside it as ``<stem>.json``), loaded weights-only, and the folder removed again.

    Raises
    ------
    ValueError
        Too large, wrong suffix, or anything the loader refuses (its message names the file).
    """
    from probes.loading import load_checkpoint

    name = Path(weights.name).name
    suffix = Path(name).suffix.lower()
    if suffix not in (".safetensors", ".pt", ".pth"):
        raise ValueError(f"{name!r} is not a checkpoint: expected a .safetensors, .pt or .pth file.")
    if weights.size > state.MAX_UPLOAD_MB * 2**20:
        raise ValueError(f"{name!r} is {weights.size / 2**20:.0f} MB; the limit is {state.MAX_UPLOAD_MB} MB.")
    with tempfile.TemporaryDirectory(prefix="bnprobe-upload-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(weights.getvalue())
        if card is not None:
            path.with_suffix(".json").write_bytes(card.getvalue())
        return load_checkpoint(path, arch=checked_architecture(arch), allow_factory=False)


def run_probe(loaded: Any, dataset: str, *, n_images: int, families: tuple[str, ...]) -> Any:
    """Run :func:`analysis.study.run_study` on ``loaded`` with the quick preset
    :data:`analysis.settings.DASHBOARD_PROBE_CONFIG` (cached on disk)."""
    import dataclasses

    from analysis.settings import DASHBOARD_PROBE_CONFIG
    from analysis.study import run_study, user_cache_dir

    config = dataclasses.replace(DASHBOARD_PROBE_CONFIG, dataset=dataset, n_images=n_images, families=families,
                                 gray_to_rgb=loaded.input_spec.channels == 3)
    result = run_study(loaded, config, cache_dir=user_cache_dir(), progress=False, device="cpu")
    return dataclasses.replace(result, probe=None)  # a StudyResult without the sink states


def _inputs() -> dict[str, Any] | None:
    source = st.radio("Model", ["Upload a weights file", "Architecture with random weights"],
                      horizontal=True, key="probe-source")
    upload = card = None
    if source == "Upload a weights file":
        upload = st.file_uploader("Checkpoint (.safetensors preferred; .pt / .pth are read weights-only)",
                                  type=["safetensors", "pt", "pth"], key="probe-upload",
                                  max_upload_size=state.MAX_UPLOAD_MB)
        arch_choice = st.selectbox("Architecture of the state dict", [_CARD, *architecture_choices()],
                                   key="probe-arch", help="Our own checkpoints carry their architecture "
                                   "in the JSON card; third-party state dicts need it named (type to "
                                   "search the torchvision and timm names).")
        if arch_choice == _CARD:
            card = st.file_uploader("Zoo card (.json) of the checkpoint", type=["json"], key="probe-card")
        arch = None if arch_choice == _CARD else arch_choice
    else:
        arch = st.selectbox("Architecture", architecture_choices(), key="probe-arch-random",
                            help="Type to search the torchvision and timm names.")
    c1, c2 = st.columns(2)
    dataset = c1.selectbox("Dataset", state.DATASETS, index=state.DATASETS.index(state.current_dataset()),
                           key="probe-dataset")
    from analysis.settings import DASHBOARD_PROBE_CONFIG, STUDY_FIELDS

    n_images = c2.select_slider("Test images", [16, 32, 64, 128, 256], value=DASHBOARD_PROBE_CONFIG.n_images,
                                key="probe-images", help=STUDY_FIELDS["n_images"].help)
    families = st.multiselect("Metric families", STUDY_FIELDS["families"].choices,
                              default=list(DASHBOARD_PROBE_CONFIG.families), key="probe-families",
                              help=STUDY_FIELDS["families"].help)
    return {"source": source, "upload": upload, "card": card, "arch": arch, "dataset": dataset,
            "n_images": int(n_images), "families": tuple(families)}


def _run(inp: dict[str, Any]) -> None:
    if not inp["families"]:
        st.error("Choose at least one metric family.")
        return
    if inp["source"] == "Upload a weights file" and inp["upload"] is None:
        st.error("Upload a checkpoint file first.")
        return
    if inp["source"] != "Upload a weights file" and not inp["arch"]:
        st.error("Pick an architecture, e.g. torchvision:mobilenet_v2.")
        return
    bar = st.progress(0.0, text="Loading the model ...")
    t0 = time.perf_counter()
    try:
        if inp["upload"] is not None and inp["source"] == "Upload a weights file":
            loaded = load_upload(inp["upload"], inp["card"], inp["arch"])
        else:
            from probes.loading import load_checkpoint

            loaded = load_checkpoint(checked_architecture(inp["arch"]), allow_factory=False)
    except Exception as err:  # noqa: BLE001 - a readable message, never a traceback
        bar.empty()
        st.error(f"Could not load the checkpoint: {err}")
        return
    bar.progress(0.2, text=f"Probing {loaded.name} on {inp['n_images']} {inp['dataset']} images and computing "
                           f"metrics ({', '.join(inp['families'])}) ...")
    try:
        view = run_probe(loaded, inp["dataset"], n_images=inp["n_images"], families=inp["families"])
    except Exception as err:  # noqa: BLE001 - a readable message, never a traceback
        bar.empty()
        st.error(f"The study of {loaded.name} failed: {err}")
        return
    bar.progress(1.0, text=f"Done in {time.perf_counter() - t0:.0f} s.")
    st.session_state[_RESULT_KEY] = {"name": loaded.name, "arch": loaded.arch, "view": view,
                                     "dataset": inp["dataset"]}


def render() -> None:
    """The Probe-a-checkpoint page."""
    st.title("Probe a checkpoint")
    st.caption(f"Files up to {state.MAX_UPLOAD_MB} MB. Weights are read as tensors only "
               "(safetensors, or torch.load with weights_only=True) and architectures come from a "
               "fixed list or a zoo card: nothing uploaded or typed here is executed.")
    with st.container(border=True):
        inp = _inputs()
        if st.button("Run the study", type="primary", key="probe-run"):
            _run(inp)
    result = st.session_state.get(_RESULT_KEY)
    if result is None:
        return
    view = result["view"]  # analysis.study.StudyResult
    arch = f" ({result['arch']})" if result["arch"] != result["name"] else ""
    st.success(f"{result['name']}{arch} on {result['dataset']}: {len(view.metrics)} values "
               f"at {view.metrics['point'].nunique()} capture points of "
               f"{view.metrics['block'].nunique()} blocks.")
    overview, block = st.tabs(["Overview", "Block explorer"])
    with overview:
        parts.show_overview(view.metrics, key="probe-overview")
    with block:
        parts.show_block(view.metrics, view.details, str(view.metrics["checkpoint"].iloc[0]), key="probe-block")
