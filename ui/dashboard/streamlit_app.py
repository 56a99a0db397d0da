"""The whyclip dashboard: ``whyclip ui`` runs this with Streamlit.

Settings come from the environment (set by ``whyclip ui``): WHYCLIP_HOME, WHYCLIP_DB,
WHYCLIP_UI_LIBRARY (library to open first), WHYCLIP_UI_IMAGES (a folder of images to pick
from), WHYCLIP_UI_MODEL (a model to use instead of the library's own).
"""

from pathlib import Path

import streamlit as st

HERE = Path(__file__).parent

st.set_page_config(page_title="whyclip", page_icon=":frog:", layout="wide")
page = st.navigation(
    [
        st.Page(HERE / "explain_page.py", title="Explain", icon=":material/image_search:", default=True),
        st.Page(HERE / "library_page.py", title="Library", icon=":material/menu_book:"),
        st.Page(HERE / "audit_page.py", title="Audit", icon=":material/fact_check:"),
        st.Page(HERE / "generate_page.py", title="Generate", icon=":material/auto_awesome:"),
    ]
)
page.run()
