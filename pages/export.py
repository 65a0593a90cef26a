"""Streamlit's folder mode runs this file when a process's first request is /export: it is the app's entry.

The page itself is views/export.py (see pages/_navigation.py).
"""

from pages._entry import run

run()
