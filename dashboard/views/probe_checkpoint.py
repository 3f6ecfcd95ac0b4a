"""Probe a checkpoint: upload weights (``.safetensors``, ``.pt``, ``.pth``; loaded weights-only,
never unpickled as code) or pick a torchvision / timm architecture with random weights, run the
study on a dataset, and see the Overview and Block-explorer views for it.

Bad files end in a readable message in the page (the loader's ValueError names the file and
what was expected), never in a traceback.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import streamlit as st

from dashboard import state
from dashboard.views.block_explorer import show_block
from dashboard.views.overview import show_overview

__all__ = ["ARCHITECTURES", "load_upload", "render", "run_probe"]

#: Architectures offered for random weights or for a bare state dict (any ``torchvision:NAME``
#: or ``timm:NAME`` can be typed in as well).
ARCHITECTURES = ("torchvision:mobilenet_v2", "torchvision:mobilenet_v3_small", "torchvision:mobilenet_v3_large",
                 "torchvision:efficientnet_b0", "torchvision:mnasnet0_5", "timm:mobilenetv2_100",
                 "timm:efficientnet_b0")
_CARD = "from its zoo card (.json, upload it below)"
_OTHER = "other (type it)"
_RESULT_KEY = "probe-result"


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
        return load_checkpoint(path, arch=arch)


def run_probe(loaded: Any, dataset: str, *, n_images: int, families: tuple[str, ...]) -> state.StudyView:
    """Run :func:`analysis.study.run_study` on ``loaded`` with small, quick settings (cached on disk)."""
    from analysis.study import StudyConfig, run_study, user_cache_dir

    config = StudyConfig(dataset=dataset, n_images=n_images, reservoir_size=600, topology_points=100,
                         families=families, gray_to_rgb=loaded.input_spec.channels == 3)
    result = run_study(loaded, config, cache_dir=user_cache_dir(), progress=False, device="cpu")
    return state.StudyView(metrics=result.metrics, details=result.details, meta=result.meta)


def _inputs() -> dict[str, Any] | None:
    source = st.radio("Model", ["Upload a weights file", "Architecture with random weights"],
                      horizontal=True, key="probe-source")
    upload = card = None
    if source == "Upload a weights file":
        upload = st.file_uploader("Checkpoint (.safetensors preferred; .pt / .pth are read weights-only)",
                                  type=["safetensors", "pt", "pth"], key="probe-upload",
                                  max_upload_size=state.MAX_UPLOAD_MB)
        arch_choice = st.selectbox("Architecture of the state dict", [_CARD, *ARCHITECTURES, _OTHER],
                                   key="probe-arch", help="Our own checkpoints carry their architecture "
                                   "in the JSON card; third-party state dicts need it named.")
        if arch_choice == _CARD:
            card = st.file_uploader("Zoo card (.json) of the checkpoint", type=["json"], key="probe-card")
        arch = None if arch_choice == _CARD else arch_choice
    else:
        arch = st.selectbox("Architecture", [*ARCHITECTURES, _OTHER], key="probe-arch-random")
    if arch == _OTHER:
        arch = st.text_input("Architecture", placeholder="torchvision:NAME or timm:NAME",
                             key="probe-arch-text").strip() or None
    c1, c2 = st.columns(2)
    dataset = c1.selectbox("Dataset", state.DATASETS, index=state.DATASETS.index(state.current_dataset()),
                           key="probe-dataset")
    n_images = c2.select_slider("Test images", [16, 32, 64, 128, 256], value=32, key="probe-images")
    from analysis.study import FAMILIES

    families = st.multiselect("Metric families", FAMILIES, default=list(FAMILIES), key="probe-families")
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
        st.error("Name an architecture, e.g. torchvision:mobilenet_v2.")
        return
    bar = st.progress(0.0, text="Loading the model ...")
    t0 = time.perf_counter()
    try:
        if inp["upload"] is not None and inp["source"] == "Upload a weights file":
            loaded = load_upload(inp["upload"], inp["card"], inp["arch"])
        else:
            from probes.loading import load_checkpoint

            loaded = load_checkpoint(inp["arch"])
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
               "(safetensors, or torch.load with weights_only=True); nothing in the file is executed.")
    with st.container(border=True):
        inp = _inputs()
        if st.button("Run the study", type="primary", key="probe-run"):
            _run(inp)
    result = st.session_state.get(_RESULT_KEY)
    if result is None:
        return
    view: state.StudyView = result["view"]
    arch = f" ({result['arch']})" if result["arch"] != result["name"] else ""
    st.success(f"{result['name']}{arch} on {result['dataset']}: {len(view.metrics)} values "
               f"at {view.metrics['point'].nunique()} capture points of "
               f"{view.metrics['block'].nunique()} blocks.")
    overview, block = st.tabs(["Overview", "Block explorer"])
    with overview:
        show_overview(view.metrics, key="probe-overview")
    with block:
        show_block(view.metrics, view.details, str(view.metrics["checkpoint"].iloc[0]), key="probe-block")
