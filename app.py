"""Percept Curator: review encrypted Percept retraining frames and push them to Custom Vision.

    make run        (the local stack with demo data, then this app on http://127.0.0.1:8501)

Settings come from the environment, .env, local.settings.json or Streamlit secrets (`Settings.load()`), read
once per run. The pages are scripts in `views/`; the pieces they share are the modules of `pages/`.
"""

from pages._entry import run

run()
