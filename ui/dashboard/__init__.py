"""Streamlit pages (``*_page.py``), the cached resources they share, and their charts."""
