"""common/files.py: atomic writes, image file names, what a path names."""

import os
import stat

import pytest

from ugatit_tf.common import files


def test_atomic_write_replaces_whole_files_with_open_permissions(tmp_path):
    target = tmp_path / "sub" / "out.json"
    files.write_json_atomic(target, {"b": 1, "a": [1.5]})
    assert target.read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    old = os.umask(0o027)
    try:
        files.write_text_atomic(target, "new")
    finally:
        os.umask(old)
    assert target.read_text() == "new"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert os.listdir(tmp_path / "sub") == ["out.json"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.bin"
    files.write_bytes_atomic(target, b"old")

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        files.atomic_write(target, fail)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]
    with pytest.raises(TypeError):
        files.write_json_atomic(target, {"x": object()})
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_list_images_sorted_regular_files_with_image_extensions(tmp_path):
    for name in ("b.PNG", "a.jpg", ".hidden.png", "notes.txt", "c.webp", "d.tif"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()
    os.mkfifo(tmp_path / "pipe.png")
    assert files.list_images(tmp_path) == [str(tmp_path / n) for n in ("a.jpg", "b.PNG",
                                                                        "c.webp")]
    assert files.list_images(tmp_path, files.PHOTO_EXTENSIONS)[-1] == str(tmp_path / "d.tif")


def test_path_kind_and_check_path_kind(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    os.mkfifo(tmp_path / "p")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    kinds = {n: files.path_kind(tmp_path / n) for n in ("f", "p", "dangling", "loop", "none")}
    assert kinds == {"f": "file", "p": "FIFO", "dangling": "missing", "loop": "unreadable",
                     "none": "missing"}
    assert files.path_kind(tmp_path) == "folder"
    assert files.path_kind("/dev/null") == "character device"
    assert files.check_path_kind(tmp_path, "--output", ("folder", "missing"), "a folder") == \
        "folder"
    for name, problem in (("f", "is an existing file, not a folder"),
                          ("p", "is a FIFO, not a folder"),
                          ("loop", "cannot be read (a symbolic link loop or no permission), "
                                   "not a folder")):
        with pytest.raises(files.PathError) as e:
            files.check_path_kind(tmp_path / name, "--output", ("folder", "missing"), "a folder")
        assert str(e.value) == f"--output {tmp_path / name}: {problem}"
    with pytest.raises(files.PathError) as e:
        files.check_path_kind(tmp_path / "none", "--input", ("file",), "an image")
    assert str(e.value) == f"--input {tmp_path / 'none'}: does not exist"
