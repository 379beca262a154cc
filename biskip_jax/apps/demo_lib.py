"""The work behind ``demo.py``: a local web page that restores an uploaded photo.

The page (Streamlit, the optional extra ``demo``: ``pip install -e ".[demo]"``) takes one photo
and shows the restored image, before | after side by side, the time the model took and a PNG
download. A file that is not a readable image gets a message on the page, never a traceback.

Nothing leaves the machine: the server listens on ``--host`` (default 127.0.0.1), Streamlit's
usage statistics are off, and its look-up of the machine's external IP is replaced by "none".
The model is loaded once, before the server starts, and shared by every browser session.
"""

import dataclasses
import io
import logging
import os
import time
from typing import Callable

import numpy as np
from PIL import Image

from biskip_jax.data.datasets import decode_image
from biskip_jax.errors import UserError

PAGE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_page", "page.py")
UPLOAD_TYPES = ("png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "gif", "ppm")

_log = logging.getLogger(__name__)

# The model the page uses, set by :func:`serve` (the page runs in the server's process).
_deblurrer: Callable[[np.ndarray], np.ndarray] | None = None
_model_name = ""


@dataclasses.dataclass(frozen=True)
class Restored:
  """One restored upload.

  Attributes:
    before: [H, W, 3] uint8, the decoded upload.
    after: [H, W, 3] uint8, the model's output.
    seconds: wall time of the model call (the first photo of a size includes compiling).
    png: ``after`` encoded as PNG, for the download.
    filename: the download's name, ``STEM_deblurred.png``.
  """
  before: np.ndarray
  after: np.ndarray
  seconds: float
  png: bytes
  filename: str


def import_streamlit():
  """Streamlit, or a one-line :class:`UserError` naming the extra that installs it."""
  try:
    import streamlit  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError("the demo page needs the optional Streamlit package: "
                    "pip install -e \".[demo]\" (or pip install streamlit)") from e
  return streamlit


def restore_upload(deblurrer: Callable[[np.ndarray], np.ndarray], data: bytes,
                   name: str) -> Restored:
  """Decodes an uploaded file, restores it and encodes the result as PNG.

  Raises:
    BadImageError: ``data`` is empty or not a readable image (the message names ``name``).
  """
  image = decode_image(data, name)
  start = time.perf_counter()
  after = np.asarray(deblurrer(image))
  seconds = time.perf_counter() - start
  buffer = io.BytesIO()
  Image.fromarray(after).save(buffer, format="PNG")
  stem = os.path.splitext(os.path.basename(name))[0] or "photo"
  return Restored(image, after, seconds, buffer.getvalue(), f"{stem}_deblurred.png")


def server_options(host: str, port: int) -> dict[str, object]:
  """Streamlit settings: local, headless, no statistics, no file watching, no error details."""
  return {
      "server.address": host,  # Set explicitly: Streamlit then skips its external-IP lookup.
      "server.port": port,
      # The printed URL; set, it also spares Streamlit the lookups of the machine's addresses.
      "browser.serverAddress": "localhost" if host in ("0.0.0.0", "::") else host,
      "server.headless": True,  # No browser opened, no e-mail prompt.
      "server.fileWatcherType": "none",
      "server.runOnSave": False,
      "browser.gatherUsageStats": False,
      "client.showErrorDetails": "none",
      "client.toolbarMode": "minimal",
      "global.developmentMode": False,
  }


def serve(deblurrer: Callable[[np.ndarray], np.ndarray], model_name: str, *,
          host: str = "127.0.0.1", port: int = 8501) -> None:
  """Serves the page at ``http://HOST:PORT`` until interrupted (Ctrl-C).

  Raises:
    UserError: Streamlit is not installed, or ``port`` is not in [1, 65535].
  """
  global _deblurrer, _model_name  # pylint: disable=global-statement
  import_streamlit()
  if not 0 < port < 65536:
    raise UserError(f"--port {port}: expected 1 to 65535")
  from streamlit import net_util  # pylint: disable=g-import-not-at-top
  from streamlit.web import bootstrap  # pylint: disable=g-import-not-at-top
  # Streamlit asks a web service for the machine's external IP (to print a URL, and to vet
  # browser origins it does not know, e.g. with --host=0.0.0.0): this page asks no one.
  net_util.get_external_ip = lambda: None
  _deblurrer, _model_name = deblurrer, model_name
  bootstrap.load_config_options({k.replace(".", "_"): v
                                 for k, v in server_options(host, port).items()})
  bootstrap.run(PAGE_SCRIPT, False, [], {})


def page() -> None:
  """The page's script: Streamlit runs it on every interaction of a session."""
  st = import_streamlit()
  st.set_page_config(page_title="Bi-Skip deblurring", layout="wide")
  st.title("Bi-Skip motion deblurring")
  st.caption(f"Model: {_model_name}. Everything runs on this machine.")
  if _deblurrer is None:
    st.error("No model loaded: start the page with python demo.py [--ckpt=RUN].")
    return
  upload = st.file_uploader("Drop a blurred photo", type=list(UPLOAD_TYPES))
  if upload is None:
    return
  cached = st.session_state.get("restored")
  if cached is not None and cached[0] == upload.file_id:
    result = cached[1]
  else:
    try:
      with st.spinner("Restoring..."):
        result = restore_upload(_deblurrer, upload.getvalue(), upload.name)
    except UserError as e:
      st.error(str(e))
      return
    except Exception as e:  # pylint: disable=broad-except  # The page shows no traceback.
      _log.exception("demo: restoring %s failed", upload.name)
      st.error(f"Could not restore {upload.name} ({type(e).__name__}); the server's log "
               "has the details.")
      return
    st.session_state["restored"] = (upload.file_id, result)
  h, w = result.after.shape[:2]
  st.success(f"Restored {w}x{h} pixels in {result.seconds:.2f} s (the first photo of a new "
             "size includes compiling the model).")
  before, after = st.columns(2)
  before.image(result.before, caption="Before (your photo)")
  after.image(result.after, caption="After (restored)")
  st.download_button("Download the restored image (PNG)", data=result.png,
                     file_name=result.filename, mime="image/png", on_click="ignore")
