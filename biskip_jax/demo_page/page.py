"""demo.py's page, run by Streamlit on every interaction (see ``biskip_jax.demo_lib``)."""

from biskip_jax import demo_lib

demo_lib.page()
