"""The script that Streamlit runs for ``demo.py`` (alone in its folder: Streamlit puts the
script's folder on ``sys.path``)."""
