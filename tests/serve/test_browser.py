"""The page in a real browser: headless Chromium driven by selenium (Debian's chromium and
chromium-driver; .ci/run installs them). Upload a JPEG and compare the page's output with the
SavedModel's, snap a frame from Chromium's fake webcam, and see a refusal's message."""

import base64
import os
import shutil

import numpy as np
import pytest

from .conftest import astronaut_jpeg, decode_png, saved_model_png

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium "
                "chromium-driver; .ci/run does it)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

TIMEOUT = 90


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000", "--use-fake-device-for-media-stream",
                 "--use-fake-ui-for-media-stream"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def open_page(browser, server):
    browser.set_window_size(1280, 1000)
    browser.get(server + "/")
    WebDriverWait(browser, TIMEOUT).until(
        lambda d: d.find_element(By.ID, "model-info").text.startswith("Model"))


def wait_state(browser, *states):
    WebDriverWait(browser, TIMEOUT).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in states)
    return browser.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def image_of(browser, element_id) -> np.ndarray:
    src = browser.find_element(By.ID, element_id).get_attribute("src")
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:60]
    return decode_png(base64.b64decode(src[len(prefix):]))


def loaded_size(browser, element_id):
    return browser.execute_script(
        "const i = document.getElementById(arguments[0]); "
        "return i.complete ? [i.naturalWidth, i.naturalHeight] : [0, 0];", element_id)


def test_upload_a_jpeg_equals_the_saved_model(browser, server, saved_model, tmp_path):
    data = astronaut_jpeg()
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(data)
    open_page(browser, server)
    browser.find_element(By.ID, "face_crop").click()  # whole photo: the SavedModel's signature
    assert not browser.find_element(By.ID, "face_crop").is_selected()
    browser.find_element(By.ID, "file").send_keys(str(photo))
    assert wait_state(browser, "done", "error") == "done", \
        browser.find_element(By.ID, "message").text
    np.testing.assert_array_equal(image_of(browser, "output"),
                                  saved_model_png(saved_model, data))
    WebDriverWait(browser, TIMEOUT).until(lambda d: loaded_size(d, "attention")[0] > 0)
    assert loaded_size(browser, "attention") == [512, 512]
    assert loaded_size(browser, "input-preview") == [512, 512]
    download = browser.find_element(By.ID, "download")
    assert download.is_displayed() and download.get_attribute("download") == "astronaut-anime.png"
    assert "the whole photo" in browser.find_element(By.ID, "status").text
    shot = os.environ.get("UGATIT_SCREENSHOT") or str(tmp_path / "page.png")
    browser.save_screenshot(shot)
    assert decode_png(open(shot, "rb").read()).shape[1] == 1280


def test_webcam_frame(browser, server):
    open_page(browser, server)
    browser.find_element(By.ID, "camera-start").click()
    WebDriverWait(browser, TIMEOUT).until(lambda d: d.execute_script(
        "return document.getElementById('camera').videoWidth") > 0)
    browser.find_element(By.ID, "camera-snap").click()
    assert wait_state(browser, "done", "error") == "done", \
        browser.find_element(By.ID, "message").text
    width, height = browser.execute_script(
        "const v = document.getElementById('camera'); return [v.videoWidth, v.videoHeight];")
    assert loaded_size(browser, "input-preview") == [width, height]
    output = image_of(browser, "output")  # face crop on; the fake camera shows no face
    assert output.shape == (32, 32, 3) and output.std() > 0
    assert "no face found" in browser.find_element(By.ID, "status").text
    browser.find_element(By.ID, "camera-stop").click()


def test_phone_layout_and_a_refused_upload(browser, server, tmp_path):
    photo = tmp_path / "me.jpg"
    photo.write_bytes(astronaut_jpeg())
    notes = tmp_path / "holiday.jpg"
    notes.write_text("not a photo at all")
    open_page(browser, server)
    browser.set_window_size(390, 844)  # a phone
    assert browser.find_element(By.ID, "model-source").text == "Loaded from test."
    browser.find_element(By.ID, "file").send_keys(str(photo))
    assert wait_state(browser, "done", "error") == "done"
    # one column: the panels are stacked, none is wider than the screen
    figures = browser.find_elements(By.CSS_SELECTOR, "#results figure")
    assert len({f.rect["x"] for f in figures}) == 1
    assert all(f.rect["width"] <= 390 for f in figures)
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 390
    browser.find_element(By.ID, "file").send_keys(str(notes))
    assert wait_state(browser, "done", "error") == "error"
    message = browser.find_element(By.ID, "message")
    assert message.is_displayed()
    assert message.text == ("holiday.jpg: not an image this page can read; send a JPEG, PNG, "
                            "GIF, BMP or WebP photo")
    assert not browser.find_element(By.ID, "results").is_displayed()
    assert not browser.find_element(By.ID, "download").is_displayed()
    browser.save_screenshot(str(tmp_path / "phone.png"))
