"""Entry point of ``streamlit run dashboard``: page configuration, the shared sidebar, routing.

Each page is one ``render()`` function in :mod:`dashboard.views` (the folder is not called
``pages/``: Streamlit would take a ``pages/`` folder beside the entry file for its legacy
multipage layout and run those files as scripts); this file only routes. Page url paths equal
the page module names.
"""

from __future__ import annotations

import streamlit as st

from dashboard import state
from dashboard.views import (block_explorer, claims, embeddings, keeps, overview, probe_checkpoint,
                             reports, spiral_lab, topology)

st.set_page_config(page_title="bottleneck-probe", page_icon=":material/hub:", layout="wide")

PAGES = {
    "Shipped checkpoints": [
        st.Page(overview.render, title="Overview", icon=":material/monitoring:", url_path="overview",
                default=True),
        st.Page(block_explorer.render, title="Block explorer", icon=":material/view_column:",
                url_path="block_explorer"),
        st.Page(topology.render, title="Topology", icon=":material/bubble_chart:", url_path="topology"),
        st.Page(embeddings.render, title="Embeddings", icon=":material/scatter_plot:",
                url_path="embeddings"),
        st.Page(keeps.render, title="What each design keeps", icon=":material/image_search:",
                url_path="keeps"),
        st.Page(claims.render, title="Claims of the notes", icon=":material/fact_check:", url_path="claims"),
    ],
    "Tools": [
        st.Page(spiral_lab.render, title="Spiral lab", icon=":material/cyclone:", url_path="spiral_lab"),
        st.Page(probe_checkpoint.render, title="Probe a checkpoint", icon=":material/upload_file:",
                url_path="probe_checkpoint"),
        st.Page(reports.render, title="Reports", icon=":material/folder_open:", url_path="reports"),
    ],
}

page = st.navigation(PAGES)
with st.sidebar:
    st.selectbox("Dataset", state.DATASETS, index=state.DATASETS.index(state.default_dataset()), key="dataset",
                 help="Which dataset's checkpoints and studies the pages show (shared by all pages).")
    st.caption("linear = no activation after the projection (MobileNetV2); "
               "relu6 = ReLU6 in the bottleneck.")
page.run()
