"""demo.py's page, run by Streamlit on every interaction (see ``biskip_jax.apps.demo_lib``)."""

from biskip_jax.apps import demo_lib

demo_lib.page()
