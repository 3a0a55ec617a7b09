"""common/progress.py: the text progress bar."""

import io

from ugatit_tf.common.progress import ProgressBar


def test_progress_bar_counts_and_eta_in_a_pipe():
    buf = io.StringIO()
    bar = ProgressBar(4, label="x", stream=buf)
    for _ in range(4):
        bar.update(1)
    bar.close()
    text = buf.getvalue()
    assert "4/4" in text and "ETA" in text and text.endswith("\n")


def test_disabled_progress_bar_writes_nothing():
    buf = io.StringIO()
    bar = ProgressBar(3, label="x", stream=buf, enabled=False)
    bar.update(3)
    bar.close()
    assert buf.getvalue() == ""
