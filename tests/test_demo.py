"""Tests for demo.py: the restore step, and the page driven in a real headless chromium."""

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import skimage.data
from PIL import Image

from biskip_jax.apps import demo_lib
from biskip_jax.data.datasets import BadImageError
from biskip_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _png(h: int, w: int) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(skimage.data.astronaut()[:h, :w])).save(buffer, "PNG")
  return buffer.getvalue()


def test_restore_upload_times_and_encodes_the_result():
  result = demo_lib.restore_upload(lambda x: 255 - x, _png(37, 53), "dir/shot.png")
  np.testing.assert_array_equal(result.before, skimage.data.astronaut()[:37, :53])
  np.testing.assert_array_equal(result.after, 255 - result.before)
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(result.png))), result.after)
  assert result.filename == "shot_deblurred.png" and result.seconds >= 0
  with pytest.raises(BadImageError, match="x.jpg") as e:
    demo_lib.restore_upload(lambda x: x, b"not an image", "x.jpg")
  # The upload's name stands for the bytes: no "<_io.BytesIO object at 0x...>".
  assert "BytesIO" not in str(e.value) and " at 0x" not in str(e.value), e.value


@pytest.mark.slow
def test_demo_without_streamlit_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "streamlit", None)
  with pytest.raises(UserError, match=r'pip install -e "\.\[demo\]"'):
    demo_lib.serve(lambda x: x, "m")
  proc = subprocess.run([sys.executable, "-c", "import sys; sys.modules['streamlit'] = None; "
                         "sys.argv = ['demo.py']; from biskip_jax.cli import demo; demo.run()"],
                        capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
  assert '.[demo]' in proc.stderr


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _browser(download_dir: str):
  """Headless Debian chromium through its chromedriver (selenium-manager downloads nothing)."""
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={download_dir}/profile",
               "--window-size=1280,1600"):
    options.add_argument(flag)
  options.add_experimental_option("prefs", {"download.default_directory": download_dir,
                                            "download.prompt_for_download": False})
  options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
  return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _wait(predicate, timeout: float, what: str, proc=None):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    value = predicate()
    if value:
      return value
    if proc is not None and proc.poll() is not None:
      pytest.fail(f"demo.py exited ({proc.returncode}) while waiting for {what}")
    time.sleep(0.25)
  pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _page_text(driver) -> str:
  return driver.find_element("tag name", "body").text


@pytest.mark.slow
@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                    reason=f"no headless browser: {CHROMIUM} and {CHROMEDRIVER} are missing "
                    "(apt-get install chromium chromium-driver; .ci/run does it as root)")
def test_demo_page_in_a_headless_browser(workdir, tmp_path):
  pytest.importorskip("selenium", reason="selenium (requirements-dev.txt) is not installed")
  pytest.importorskip("streamlit", reason="the demo extra (streamlit) is not installed")
  path, _, _ = workdir
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  log = open(tmp_path / "demo.log", "w+")  # pylint: disable=consider-using-with
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "demo.py"), f"--ckpt={path}",
                           f"--port={port}"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", "HOME": str(tmp_path)})
  driver = None
  try:
    def healthy():
      try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
          return r.read() == b"ok"
      except OSError:
        return False
    _wait(healthy, 180, "the server", proc)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = _browser(str(downloads))
    driver.get(url)
    upload = _wait(lambda: driver.find_elements("css selector", "input[type=file]"), 60,
                   "the upload field")[0]
    photo = tmp_path / "blurred photo.png"
    photo.write_bytes(_png(37, 53))
    upload.send_keys(str(photo))
    images = _wait(lambda: (lambda e: e if len(e) == 2 else None)(
        driver.find_elements("css selector", "[data-testid=stImage] img")), 120, "the result")
    sizes = [driver.execute_script("return arguments[0].complete && "
                                   "[arguments[0].naturalWidth, arguments[0].naturalHeight]", i)
             for i in images]
    assert sizes == [[53, 37], [53, 37]], sizes
    text = _page_text(driver)
    assert "Restored 53x37 pixels in" in text and "Traceback" not in text, text
    # The download is a PNG of the input's size.
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})
    driver.find_element("css selector", "[data-testid=stDownloadButton] button").click()
    saved = _wait(lambda: [p for p in downloads.iterdir() if p.suffix == ".png"], 30,
                  "the download")
    assert saved[0].name == "blurred photo_deblurred.png"
    with Image.open(saved[0]) as img:
      assert img.size == (53, 37) and img.mode == "RGB"
    # A damaged file: one message on the page, no traceback.
    bad = tmp_path / "damaged.png"
    bad.write_bytes(_png(37, 53)[:60])
    driver.find_element("css selector", "input[type=file]").send_keys(str(bad))
    _wait(lambda: "damaged.png" in _page_text(driver) and driver.find_elements(
        "css selector", "[data-testid=stAlertContentError]"), 60, "the error message")
    text = _page_text(driver)
    assert "Cannot read image" in text and "Traceback" not in text, text
    # The page asked nothing of any other host (chrome:, data: and blob: URLs stay inside).
    hosts = set()
    for entry in driver.get_log("performance"):
      message = json.loads(entry["message"])["message"]
      if message["method"] == "Network.requestWillBeSent":
        parts = urllib.parse.urlsplit(message["params"]["request"]["url"])
        if parts.scheme in ("http", "https", "ws", "wss"):
          hosts.add(parts.netloc)
    assert hosts == {f"127.0.0.1:{port}"}, hosts
  finally:
    if driver is not None:
      driver.quit()
    proc.terminate()
    try:
      proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      proc.kill()
    log.seek(0)
    server_log = log.read()
    log.close()
    shutil.rmtree(tmp_path / "downloads" / "profile", ignore_errors=True)
  assert "Traceback" not in server_log, server_log
