"""Data pre-flight scan: a corpus of bad files (generated here, nothing committed) and what the
scan, the check phase, the training file list and the tf.data pipeline do with each."""

import io
import os
import struct
import subprocess
import sys
import time
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.common import crafted
from tests.conftest import tiny_config
from ugatit_tf.data import pipeline as data_lib
from ugatit_tf.config import Config
from ugatit_tf.data import check as datacheck

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMG_SIZE = 32
EXTS = "jpg, jpeg, png, bmp, gif, webp"


def base_rgb(h=40, w=48, seed=0):
    """A smooth colour picture (compresses like a photo, survives JPEG round trips)."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 5 + seed * 7, yy * 6, (xx + yy) * 3 + seed * 11], -1)
    return (rgb % 256).astype(np.uint8)


def png_header_only(path, width, height):
    """A PNG whose header announces width x height (a decompression bomb's header)."""
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(body)


def jpeg_bytes(rgb, **kw):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def build_corpus(folder):
    """Write good and bad files into `folder`; returns {name: (action, problems, reason)}."""
    import cv2
    os.makedirs(folder, exist_ok=True)
    P = lambda name: os.path.join(folder, name)  # noqa: E731
    rgb = base_rgb()
    im = Image.fromarray(rgb)
    expected = {}

    def add(name, action, problems=(), reason=""):
        expected[name] = (action, tuple(problems), reason)

    im.save(P("good.jpg"), quality=90)
    add("good.jpg", "use")
    im.save(P("good.png"))
    add("good.png", "use")
    Image.fromarray(base_rgb(seed=3)).save(P("Good2.JPEG"), quality=90)  # upper-case extension
    add("Good2.JPEG", "use")
    im.save(P("good.webp"))
    add("good.webp", "use")
    # 1. empty
    open(P("empty.jpg"), "wb").close()
    add("empty.jpg", "skip", ["empty"], "empty file (0 bytes)")
    # 2-3. truncated JPEG and PNG
    good_jpg = open(P("good.jpg"), "rb").read()
    sos = good_jpg.index(b"\xff\xda")  # cut inside the compressed data: only load() sees it
    open(P("truncated.jpg"), "wb").write(good_jpg[:sos + (len(good_jpg) - sos) // 2])
    add("truncated.jpg", "skip", ["truncated"], "truncated JPEG: the file is cut short")
    good_png = open(P("good.png"), "rb").read()
    open(P("truncated.png"), "wb").write(good_png[:len(good_png) // 2])
    add("truncated.png", "skip", ["truncated"], "truncated PNG: the file is cut short")
    # 4. corrupt JPEG: a broken Huffman table
    bad = bytearray(good_jpg)
    dht = bad.index(b"\xff\xc4")
    bad[dht + 5:dht + 25] = bytes(range(200, 220))
    open(P("corrupt.jpg"), "wb").write(bytes(bad))
    add("corrupt.jpg", "skip", ["corrupt"], "corrupt JPEG: the image data cannot be decoded")
    # 5-9. not images, with image extensions
    open(P("text.jpg"), "w").write("this is not a picture\n")
    add("text.jpg", "skip", ["not_an_image"], "not an image: text file")
    with zipfile.ZipFile(P("archive.png"), "w") as z:
        z.writestr("a.txt", "hello")
    add("archive.png", "skip", ["not_an_image"], "not an image: ZIP archive")
    open(P("random.jpg"), "wb").write(b"\x00" + np.random.default_rng(1).bytes(2000))
    add("random.jpg", "skip", ["not_an_image"], "not an image: unrecognised content")
    open(P("page.jpg"), "w").write("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    add("page.jpg", "skip", ["not_an_image"], "not an image: HTML page")
    open(P("iphone.jpg"), "wb").write(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 100)
    add("iphone.jpg", "skip", ["not_an_image"],
        "not an image: HEIC/HEIF image, not supported: convert it to JPEG or PNG")
    # 10. grayscale
    im.convert("L").save(P("gray.jpg"), quality=90)
    add("gray.jpg", "use", ["grayscale"], "grayscale: used as RGB")
    # 11-13. alpha: RGBA, LA, palette with transparency
    rgba = np.dstack([rgb, np.where(np.arange(48)[None, :] < 24, 0, 255).repeat(40, 0)])
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(P("rgba.png"))
    add("rgba.png", "convert", ["alpha"], "transparency (RGBA): converted, flattened onto white")
    im.convert("LA").save(P("la.png"))
    add("la.png", "convert", ["alpha"], "transparency (LA): converted, flattened onto white")
    im.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(P("palette_alpha.png"),
                                                                   transparency=0)
    add("palette_alpha.png", "convert", ["alpha"],
        "transparency (P): converted, flattened onto white")
    im.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(P("palette.png"))
    add("palette.png", "use")
    # 14-15. 16-bit grayscale and RGB
    g16 = (np.arange(40 * 48).reshape(40, 48) * 30).astype(np.uint16)
    cv2.imwrite(P("gray16.png"), g16)
    add("gray16.png", "convert", ["16bit"], "16-bit: converted to 8-bit")
    cv2.imwrite(P("rgb16.png"), rgb[..., ::-1].astype(np.uint16) * 257)  # BGR order
    add("rgb16.png", "convert", ["16bit"], "16-bit: converted to 8-bit")
    # 16. CMYK JPEG
    im.convert("CMYK").save(P("cmyk.jpg"), quality=95)
    add("cmyk.jpg", "convert", ["cmyk"], "CMYK JPEG: converted to RGB")
    # 17. tiny
    Image.fromarray(base_rgb(8, 8)).save(P("tiny.png"))
    add("tiny.png", "use", ["tiny"], f"tiny: 8x8 pixels (upscaled to {IMG_SIZE}x{IMG_SIZE})")
    # 18-19. huge: over the limit, and a decompression bomb (over twice the limit)
    png_header_only(P("huge.png"), 9000, 9000)
    add("huge.png", "skip", ["huge"], "too large: 9000x9000 pixels (limit 50 Mpx)")
    png_header_only(P("bomb.png"), 20000, 20000)
    add("bomb.png", "skip", ["huge"], "too large: 20000x20000 pixels (limit 50 Mpx)")
    # 19b. GIF attacks: a second frame far larger than the screen, a frame outside a 1x1 screen,
    # and many frames of a fair size; all refused from the headers, before any decoding
    with open(P("bigframe.gif"), "wb") as f:
        f.write(crafted.gif((64, 64), [(0, 0, 64, 64), (0, 0, 20000, 20000)]))
    add("bigframe.gif", "skip", ["huge"], "too large: GIF of 64x64 with 2 frames of up to "
        "400,000,000 pixels = 800,000,000 pixels (limit 50 Mpx, frames x largest frame)")
    with open(P("outside.gif"), "wb") as f:
        f.write(crafted.gif((1, 1), [(0, 0, 20000, 20000)]))
    add("outside.gif", "skip", ["huge"], "too large: GIF of 1x1 with 1 frame of up to "
        "400,000,000 pixels = 400,000,000 pixels (limit 50 Mpx, frames x largest frame)")
    with open(P("many.webp"), "wb") as f:
        f.write(crafted.riff(crafted.vp8x(1000, 1000), *[crafted.anmf(0, 0, 1000, 1000)] * 51))
    add("many.webp", "skip", ["huge"], "too large: WebP of 1000x1000 with 51 frames of up to "
        "1,000,000 pixels = 51,000,000 pixels (limit 50 Mpx, frames x largest frame)")
    # 20. animated GIF
    frames = [Image.fromarray(np.full((40, 48, 3), c, np.uint8)) for c in (30, 128, 220)]
    frames[0].save(P("anim.gif"), save_all=True, append_images=frames[1:], duration=100,
                   loop=0)
    add("anim.gif", "use", ["animated"], "animated GIF (3 frames): first frame used")
    # 21. EXIF-rotated JPEG (orientation 6: stored sideways)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(P("rotated.jpg"), quality=90, exif=exif.tobytes())
    add("rotated.jpg", "convert", ["exif_rotated"], "EXIF orientation 6: converted upright")
    # 22. another format behind an image extension
    im.save(P("tiff_inside.jpg"), format="TIFF")
    add("tiff_inside.jpg", "convert", ["other_format"],
        "TIFF content with a .jpg extension: converted")
    # 23. 8-bit palette BMP (tf.io.decode_image gets its colours wrong)
    im.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(P("palette.bmp"))
    add("palette.bmp", "convert", ["bmp_mode"],
        "BMP with P pixels: converted (TensorFlow mis-decodes it)")
    # 24-28. entries that are not training files
    os.makedirs(P("more_pictures"))
    im.save(os.path.join(folder, "more_pictures", "x.jpg"))
    add("more_pictures", "ignore", ["folder"],
        "folder: ignored (images in subfolders are not used)")
    open(P("notes.txt"), "w").write("notes")
    add("notes.txt", "ignore", ["not_image_file"], "not an image file: ignored")
    im.save(P("scan.tif"))
    add("scan.tif", "ignore", ["unsupported_extension"],
        f"unsupported extension .tif: ignored (convert it to {EXTS})")
    open(P("._good.jpg"), "wb").write(b"\x00\x05\x16\x07AppleDouble")
    add("._good.jpg", "ignore", ["hidden"], "hidden file: ignored")
    os.symlink("gone.jpg", P("link.jpg"))
    add("link.jpg", "ignore", ["broken_link"], "broken symbolic link: ignored")
    return expected


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("corpus") / "trainA")
    return folder, build_corpus(folder)


def test_corpus_reasons_exact(corpus):
    folder, expected = corpus
    reports = datacheck.scan_folder(folder, IMG_SIZE)
    got = {r.name: (r.action, r.problems, r.reason) for r in reports}
    assert set(got) == set(expected)
    for name, want in expected.items():
        assert got[name] == want, name
    # sorted like list_images, and the candidates are exactly list_images' files
    assert [r.path for r in reports] == sorted(r.path for r in reports)
    candidates = [r.path for r in reports if r.action != "ignore"]
    assert candidates == data_lib.list_images(folder)
    kinds = {c for r in reports for c in r.problems}
    assert len(kinds) >= 15, kinds
    cut = next(r for r in reports if r.name == "truncated.jpg")
    assert cut.detail.startswith("image file is truncated")  # the decoder's own message


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "locked.jpg"
    path.write_bytes(jpeg_bytes(base_rgb()))
    if os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads anything: fail the open as a permission problem would
        def refuse(p, *a, **k):
            raise PermissionError(13, "Permission denied", str(p))
        monkeypatch.setattr(datacheck, "open", refuse, raising=False)
    [report] = datacheck.scan_folder(str(tmp_path), IMG_SIZE)
    assert (report.action, report.problems, report.reason) == (
        "skip", ("unreadable",), "unreadable: Permission denied")


def test_byte_limit(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(base_rgb()))
    size = os.path.getsize(tmp_path / "a.jpg")
    [report] = datacheck.scan_folder(str(tmp_path), IMG_SIZE, max_bytes=size - 1)
    assert report.reason == f"too large: {size:,} bytes (limit {size - 1:,} bytes)"


def test_conversions_keep_train_and_test_pixels_equal(corpus, tmp_path):
    import cv2
    folder, _ = corpus
    P = lambda name: os.path.join(folder, name)  # noqa: E731
    out = {}
    for name in ("rgba.png", "gray16.png", "rgb16.png", "cmyk.jpg", "rotated.jpg",
                 "tiff_inside.jpg", "palette.bmp", "palette_alpha.png", "la.png"):
        dst = str(tmp_path / (name + ".png"))
        datacheck.convert_to_png(P(name), dst)
        with Image.open(dst) as im:
            assert (im.format, im.mode) == ("PNG", "RGB"), name
            out[name] = np.asarray(im)
        # the test phase (load_rgb) reads the original exactly like the training copy
        np.testing.assert_array_equal(data_lib.load_rgb(P(name)), out[name], err_msg=name)
    rgb = base_rgb()
    assert (out["rgba.png"][:, :24] == 255).all()  # transparent half: white
    np.testing.assert_array_equal(out["rgba.png"][:, 24:], rgb[:, 24:])
    g16 = cv2.imread(P("gray16.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(out["gray16.png"][..., 0], np.round(g16 / 257.0))
    np.testing.assert_array_equal(out["rgb16.png"], rgb)
    assert np.abs(out["cmyk.jpg"].astype(int) - rgb).max() <= 12
    assert out["rotated.jpg"].shape == (48, 40, 3)  # upright: the stored 40x48 turned
    np.testing.assert_array_equal(out["tiff_inside.jpg"], rgb)
    with Image.open(P("palette.bmp")) as im:
        np.testing.assert_array_equal(out["palette.bmp"], np.asarray(im.convert("RGB")))


def make_dataset(root, bad_a=True, bad_b=False, n_good=4):
    """trainA: the corpus + good images; trainB: good images (or only bad ones)."""
    expected = build_corpus(os.path.join(root, "trainA")) if bad_a else None
    os.makedirs(os.path.join(root, "trainA"), exist_ok=True)
    os.makedirs(os.path.join(root, "trainB"), exist_ok=True)
    for i in range(n_good):
        Image.fromarray(base_rgb(seed=i)).save(os.path.join(root, "trainA", f"a{i}.jpg"))
    if bad_b:
        open(os.path.join(root, "trainB", "empty.jpg"), "wb").close()
        open(os.path.join(root, "trainB", "text.png"), "w").write("text")
    else:
        for i in range(n_good):
            Image.fromarray(base_rgb(seed=10 + i)).save(os.path.join(root, "trainB",
                                                                     f"b{i}.png"))
    return expected


RUN = dict(dataset="mixed", img_size=IMG_SIZE, epoch=1, iteration=2, print_freq=100,
           save_freq=100, batch_size=2)


def snapshot(folder):
    return {os.path.join(d, f): os.stat(os.path.join(d, f), follow_symlinks=False).st_mtime_ns
            for d, _, files in os.walk(folder) for f in files}


def test_check_dataset_report(tmp_path):
    expected = make_dataset(str(tmp_path / "ds" / "mixed"))
    cfg = tiny_config(tmp_path, dataset_dir=str(tmp_path / "ds"), **RUN)
    report = datacheck.check_dataset(cfg)
    assert report.usable and report.problems() == []
    a = report.domains["trainA"]
    n_skip = sum(v[0] == "skip" for v in expected.values())
    n_convert = sum(v[0] == "convert" for v in expected.values())
    n_use = sum(v[0] == "use" for v in expected.values()) + 4
    assert len(a.usable) == n_use + n_convert and len(a.convert) == n_convert
    assert len(a.skipped) == n_skip
    assert report.counts["alpha"] == 3 and report.counts["huge"] == 5
    assert report.counts["not_an_image"] == 5
    text = report.text()
    assert f"trainA: {n_use + n_convert} usable of {n_use + n_convert + n_skip} image files" in text
    assert "  skipped  empty.jpg: empty file (0 bytes)" in text
    assert "  skipped  truncated.jpg: truncated JPEG: the file is cut short (image file is " \
           "truncated" in text
    assert "  convert  cmyk.jpg: CMYK JPEG: converted to RGB" in text
    assert "  warning  gray.jpg: grayscale: used as RGB" in text
    assert "  ignored  notes.txt: not an image file: ignored" in text
    assert "trainB: 4 usable of 4 image files" in text
    assert f"testA: missing folder {tmp_path / 'ds' / 'mixed' / 'testA'} (needed by --phase " \
           f"test)" in text
    assert text.endswith(f"OK: training can proceed (trainA {n_use + n_convert}, trainB 4 "
                         f"usable images)")


def test_domain_files_converts_outside_the_dataset(tmp_path):
    root = str(tmp_path / "ds" / "mixed")
    expected = make_dataset(root)
    before = snapshot(root)
    cfg = tiny_config(tmp_path, dataset_dir=str(tmp_path / "ds"), **RUN)
    lines = []
    files = data_lib.domain_files(cfg, log=lines.append)
    assert snapshot(root) == before  # nothing written into the data set
    skipped = sorted(n for n, v in expected.items() if v[0] == "skip")
    converted = sorted(n for n, v in expected.items() if v[0] == "convert")
    out_dir = data_lib.converted_folder(cfg, "trainA")
    assert out_dir.startswith(str(tmp_path / "ck"))
    # one warning line per skipped file, then one summary line (trainB is clean: silent)
    reports = {r.name: r for r in datacheck.scan_folder(os.path.join(root, "trainA"),
                                                        IMG_SIZE)}
    assert lines[:-1] == [f" [!] skipped trainA/{reports[n].line()}" for n in skipped]
    assert lines[0] == " [!] skipped trainA/archive.png: not an image: ZIP archive"
    n_usable = len(files["trainA"])
    assert lines[-1] == (f" [!] trainA: {n_usable} of {n_usable + len(skipped)} images usable, "
                         f"{len(skipped)} skipped, {len(converted)} converted to 8-bit RGB PNG "
                         f"in {out_dir}, 3 with warnings (grayscale, tiny or animated; see "
                         f"--phase check)")
    # the training order is the folder's sorted order, with copies in place of originals
    want = [os.path.join(out_dir, data_lib._converted_name(p))
            if os.path.basename(p) in converted else p
            for p in data_lib.list_images(os.path.join(root, "trainA"))
            if os.path.basename(p) not in skipped]
    assert files["trainA"] == want
    assert sorted(os.listdir(out_dir)) == sorted(
        os.path.basename(f) for f in want if f.startswith(out_dir))
    # tf.io.decode_image reads every file that training will use
    for f in files["trainA"] + files["trainB"]:
        assert data_lib.decode(f).shape[-1] == 3
    # a second call reuses the copies; a changed original gets a new copy, the old one goes
    stamps = snapshot(out_dir)
    assert data_lib.domain_files(cfg, log=lambda *a: None) == files
    assert snapshot(out_dir) == stamps
    os.utime(os.path.join(root, "trainA", "cmyk.jpg"), ns=(1, 1))
    again = data_lib.domain_files(cfg, log=lambda *a: None)["trainA"]
    assert len(os.listdir(out_dir)) == len(converted) and again != files["trainA"]


def test_a_jpeg_of_too_many_scans_is_skipped_as_too_large(tmp_path):
    from tests.common.crafted import many_scans
    from ugatit_tf.common.images import MAX_JPEG_SCANS
    path = tmp_path / "scans.jpg"
    path.write_bytes(many_scans(MAX_JPEG_SCANS + 1))
    report = datacheck.scan_file(str(path), IMG_SIZE)
    assert report.action == datacheck.SKIP
    assert report.line() == (f"scans.jpg: too large: JPEG of {MAX_JPEG_SCANS + 1} scans, over "
                             f"the limit of {MAX_JPEG_SCANS} (each scan of a progressive JPEG "
                             f"is decoded over the whole image)")
    path.write_bytes(many_scans(MAX_JPEG_SCANS))
    assert datacheck.scan_file(str(path), IMG_SIZE).action == datacheck.USE


def test_a_file_gone_between_scan_and_conversion_is_skipped(tmp_path, monkeypatch):
    root = tmp_path / "ds" / "mixed"
    make_dataset(str(root))
    cfg = tiny_config(tmp_path, dataset_dir=str(tmp_path / "ds"), **RUN)
    gone = root / "trainA" / "cmyk.jpg"  # a file the scan says to convert
    real_scan = data_lib.scan_folder

    def scan_then_delete(folder, img_size):
        reports = real_scan(folder, img_size)
        if os.path.exists(gone):
            os.remove(gone)
        return reports

    monkeypatch.setattr(data_lib, "scan_folder", scan_then_delete)
    lines = []
    files = data_lib.domain_files(cfg, log=lines.append)["trainA"]
    assert [line for line in lines if "cmyk.jpg" in line] == [
        f" [!] skipped trainA/cmyk.jpg: cannot convert it ([Errno 2] No such file or "
        f"directory: '{gone}')"]
    assert files and not any("cmyk" in os.path.basename(f) for f in files)


def test_no_usable_image_fails_before_the_model(tmp_path):
    from ugatit_tf.train.trainer import Trainer
    make_dataset(str(tmp_path / "ds" / "mixed"), bad_a=False, bad_b=True)
    cfg = tiny_config(tmp_path, dataset_dir=str(tmp_path / "ds"), **RUN)
    folder = tmp_path / "ds" / "mixed" / "trainB"
    with pytest.raises(data_lib.DataError) as e:
        Trainer(cfg, log=lambda *a: None)
    assert str(e.value) == (
        f"data folder {folder} has no usable images: all 2 image files are unusable (run "
        f"python main.py --phase check --dataset mixed --dataset_dir {tmp_path / 'ds'} for "
        f"the list)")
    report = datacheck.check_dataset(cfg)
    assert not report.usable
    assert report.problems() == [f"trainB: no usable image in {folder}"]


def test_pipeline_survives_a_file_deleted_mid_run(tmp_path):
    root = tmp_path / "ds" / "mixed"
    make_dataset(str(root), bad_a=False)
    cfg = tiny_config(tmp_path, dataset_dir=str(tmp_path / "ds"), augment_flag=False, **RUN)
    files = data_lib.domain_files(cfg, log=lambda *a: None)["trainA"]
    it = iter(data_lib.train_dataset(files, cfg, seed=1))
    next(it)
    os.remove(files[0])
    open(files[1], "wb").write(b"garbage")  # replaced by something undecodable
    batches = [next(it).numpy() for _ in range(8)]  # two epochs more: no exception
    assert all(b.shape == (2, IMG_SIZE, IMG_SIZE, 3) for b in batches)


@pytest.mark.slow
def test_training_runs_on_a_folder_of_good_and_bad_files(tmp_path):
    from ugatit_tf.train.trainer import Trainer
    make_dataset(str(tmp_path / "ds" / "mixed"))
    cfg = tiny_config(tmp_path, dataset_dir=str(tmp_path / "ds"), **RUN)
    trainer = Trainer(cfg, log=lambda *a: None)
    out = trainer.train(progress=False)
    assert out["end"] == 2 and np.isfinite(list(out["last"].values())).all()
    assert os.listdir(data_lib.converted_folder(cfg, "trainA"))


@pytest.mark.slow
def test_check_phase_command_line(tmp_path):
    make_dataset(str(tmp_path / "ds" / "mixed"))
    make_dataset(str(tmp_path / "ds" / "broken"), bad_a=False, bad_b=True)
    common = ["--dataset_dir", str(tmp_path / "ds"), "--img_size", str(IMG_SIZE), "--n_dis", "4",
              "--checkpoint_dir", str(tmp_path / "ck")]
    res = subprocess.run([sys.executable, "main.py", "--phase", "check", "--dataset", "mixed"]
                         + common, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "  skipped  bomb.png: too large: 20000x20000 pixels (limit 50 Mpx)" in res.stdout
    assert "OK: training can proceed (trainA" in res.stdout
    res = subprocess.run([sys.executable, "main.py", "--phase", "check", "--dataset", "broken"]
                         + common, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "  skipped  text.png: not an image: text file" in res.stdout
    assert res.stdout.rstrip().endswith(
        f"NOT USABLE: training cannot proceed: trainB: no usable image in "
        f"{tmp_path / 'ds' / 'broken' / 'trainB'}")
    assert not os.path.exists(tmp_path / "ck")  # the check writes nothing


def test_scan_is_fast(tmp_path):
    """Hundreds of files a second even on a loaded 2-core machine (3,400 256 px JPEGs take
    about a second here)."""
    payload = jpeg_bytes(np.asarray(Image.fromarray(base_rgb()).resize((256, 256))))
    for i in range(400):
        (tmp_path / f"{i:04d}.jpg").write_bytes(payload)
    t0 = time.monotonic()
    reports = datacheck.scan_folder(str(tmp_path), 256)
    seconds = time.monotonic() - t0
    assert len(reports) == 400 and all(r.action == "use" for r in reports)
    assert seconds < 20, seconds


@pytest.mark.parametrize("name, data, found", [
    ("frames.gif", crafted.gif((64, 64), [(0, 0, 64, 64), (0, 0, 20000, 20000)]),
     "GIF of 64x64 with 2 frames of up to 400000000 pixels = 800000000 pixels"),
    ("big.png", crafted.png((12000, 12000)), "PNG image of 144000000 pixels (12000x12000)"),
])
def test_test_images_over_the_budget_are_refused_before_decoding(tmp_path, name, data, found):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(datacheck.DataError) as e:
        data_lib.load_rgb(str(path))
    assert str(e.value) == (f"cannot read image {path}: {found}, over the limit of 50000000 "
                            f"pixels (frames x largest frame)")


def test_missing_demo_data_set_names_the_command_that_makes_it(tmp_path):
    cfg = Config(dataset="demo", dataset_dir=str(tmp_path), img_size=IMG_SIZE, n_dis=4)
    message = (f"the demo data set is missing ({tmp_path / 'demo'}/trainA does not exist): run "
               f"python tools/make_demo_dataset.py --out {tmp_path / 'demo'}")
    for call in (datacheck.check_dataset, data_lib.domain_files):
        with pytest.raises(datacheck.DataError) as e:
            call(cfg)
        assert str(e.value) == message
    assert os.listdir(tmp_path) == []  # nothing drawn, nothing written


def test_pipeline_does_not_re_export_the_check_module():
    for name in ("check_dataset", "DOMAINS", "IMAGE_EXTENSIONS", "to_rgb8", "to_uint8"):
        assert not hasattr(data_lib, name), name
