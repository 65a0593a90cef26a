"""Streamlit's folder mode runs this file when a process's first request is /activity: it is the app's entry.

The page itself is views/activity.py (see pages/_navigation.py).
"""

from pages._entry import run

run()
