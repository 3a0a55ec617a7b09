"""In-graph guards on untrusted encoded images, run before anything is decoded.

The SavedModel's bytes signatures take JPEG/PNG/BMP/GIF bytes from the network. Before
TensorFlow decodes them, `decode_guarded` checks, with graph ops only: the byte count, the
format (magic bytes), the size every header declares (JPEG SOF, PNG IHDR, BMP info header, GIF
logical screen AND every GIF frame's image descriptor, because TensorFlow decodes every frame
at the largest frame's size), that PNG and JPEG data are complete (PNG chunks up to IEND, a
JPEG EOI after its last scan), a JPEG's number of scans (each is decoded over the whole
image: common.images.MAX_JPEG_SCANS), and after decoding the decoded size. Every refusal is an
InvalidArgument error (HTTP 400 in TF Serving) whose message starts with `image_bytes[i]:`,
the index of the offending image. The budgets and their measured effect are in
docs/serving.md and docs/reliability.md.
"""

from __future__ import annotations

import tensorflow as tf

from ugatit_tf.common.images import MAX_JPEG_SCANS
from ugatit_tf.export.pixels import resize_uint8

DEFAULT_MAX_BYTES = 10 * 1024 * 1024        # 10 MiB per encoded image
DEFAULT_MAX_PIXELS = 4096 * 4096            # 16.8 megapixels per decoded image (all frames)
DEFAULT_MAX_BATCH = 16                      # images per request
WALK_MAX_STEPS = 100_000  # GIF blocks / PNG chunks walked (a 10 MB GIF has ~40k blocks)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def check(condition, message):
    """An assertion op whose failure is InvalidArgument with `message` (a string tensor)."""
    return tf.debugging.Assert(condition, [message], summarize=1)


def _byte_reader(data):
    """(at, bytes, size): `at(i)` is byte i of `data` as int64, -1 past the end (never an
    out-of-range read); `bytes` the uint8 vector."""
    b = tf.io.decode_raw(data, tf.uint8)
    size = tf.size(b, out_type=tf.int64)

    def at(i):
        i = tf.cast(i, tf.int64)
        inside = tf.logical_and(i >= 0, i < size)
        value = tf.gather(b, tf.clip_by_value(i, 0, tf.maximum(size - 1, 0)))
        return tf.where(inside, tf.cast(value, tf.int64), tf.constant(-1, tf.int64))
    return at, b, size


def _header_uint(padded, pos, nbytes, dtype, little_endian):
    raw = tf.strings.substr(padded, pos, nbytes)
    return tf.cast(tf.io.decode_raw(raw, dtype, little_endian=little_endian)[0], tf.int64)


def _declared_size(data, is_jpeg, is_png, is_gif):
    """[height, width] (int64) that the file's header declares, read without decoding:
    JPEG via tf.image.extract_jpeg_shape, PNG from IHDR (big-endian uint32 at 16 / 20: a
    product over int64's range wraps negative and is refused as empty), GIF
    from the logical screen (little-endian uint16 at 6 / 8), BMP from the info header
    (little-endian int32 at 18 / 22; a negative height means top-down rows)."""
    padded = tf.strings.join([data, tf.constant(b"\0" * 32)])  # never read past the end
    png = tf.bitwise.bitwise_and(tf.stack([_header_uint(padded, 20, 4, tf.int32, False),
                                           _header_uint(padded, 16, 4, tf.int32, False)]),
                                 tf.constant(0xFFFFFFFF, tf.int64))  # as unsigned
    gif = tf.stack([_header_uint(padded, 8, 2, tf.uint16, True),
                    _header_uint(padded, 6, 2, tf.uint16, True)])
    bmp = tf.abs(tf.stack([_header_uint(padded, 22, 4, tf.int32, True),
                           _header_uint(padded, 18, 4, tf.int32, True)]))
    other = tf.where(is_png, png, tf.where(is_gif, gif, bmp))
    return tf.cond(is_jpeg,
                   lambda: tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64),
                   lambda: other)


def _colour_table(packed):
    """Bytes of the GIF colour table that a packed-flags byte announces."""
    return tf.where(tf.bitwise.bitwise_and(packed, 0x80) > 0,
                    3 * tf.bitwise.left_shift(tf.constant(2, tf.int64),
                                              tf.bitwise.bitwise_and(packed, 7)),
                    tf.constant(0, tf.int64))


def _u16(at, i):
    """The little-endian uint16 at byte i, read with a `_byte_reader`'s `at`."""
    return at(i) + 256 * at(i + 1)


def _gif_step(at, pos, frames, height, width, in_blocks, steps, done):
    """One step of the GIF walk from byte `pos`: the walk's next state."""
    c = at(pos)
    # inside a run of data sub-blocks: a length byte, 0 ends the run
    block_pos = tf.where(c > 0, pos + c + 1, pos + 1)
    block_done = c < 0
    # between blocks: 0x21 extension, 0x2C image descriptor, anything else: stop
    is_ext, is_image = tf.equal(c, 0x21), tf.equal(c, 0x2C)
    image = tf.logical_and(tf.logical_not(in_blocks), is_image)
    image_pos = pos + 10 + _colour_table(at(pos + 9)) + 1  # descriptor, table, LZW size
    top_pos = tf.where(is_ext, pos + 2, tf.where(is_image, image_pos, pos))
    top_done = tf.logical_not(tf.logical_or(is_ext, is_image))
    return (tf.where(in_blocks, block_pos, top_pos),
            frames + tf.cast(image, tf.int64),
            tf.where(image, tf.maximum(height, _u16(at, pos + 7)), height),
            tf.where(image, tf.maximum(width, _u16(at, pos + 5)), width),
            tf.where(in_blocks, c > 0, tf.logical_or(is_ext, is_image)),
            steps + 1,
            tf.where(in_blocks, block_done, top_done))


def gif_frames(data, max_pixels):
    """Walk a GIF's blocks without decoding and read every frame's image descriptor.

    TensorFlow decodes every frame (even when only the first is returned) into a
    [frames, H, W] buffer where H x W is the largest frame's size, so the cost of a GIF is
    frames x H x W, whatever its logical screen says. Returns (frames, height, width,
    finished): the walk starts from the logical screen's size and stops as soon as
    frames x height x width exceeds `max_pixels` (so a refusal costs a few steps);
    finished is False when it needed more than WALK_MAX_STEPS steps."""
    at, _, _ = _byte_reader(data)
    start = 13 + _colour_table(at(10))  # header 6 + logical screen descriptor 7 + table

    def body(pos, frames, height, width, in_blocks, steps, done):
        return _gif_step(at, pos, frames, height, width, in_blocks, steps, done)

    def cond(pos, frames, height, width, in_blocks, steps, done):
        within = frames * height * width <= max_pixels
        return tf.logical_and(tf.logical_and(tf.logical_not(done), within),
                              steps < WALK_MAX_STEPS)

    zero = tf.constant(0, tf.int64)
    _, frames, height, width, _, steps, done = tf.while_loop(
        cond, body, (start, zero, _u16(at, 8), _u16(at, 6), tf.constant(False), zero,
                     tf.constant(False)),
        parallel_iterations=1)
    return frames, height, width, tf.logical_or(done, frames * height * width > max_pixels)


def png_complete(data):
    """(complete, finished): whether the PNG's chunks (length, type, data, CRC) run from
    the signature to an IEND chunk inside the data, walked without decoding; finished is
    False when there were more than WALK_MAX_STEPS chunks."""
    at, _, size = _byte_reader(data)

    def body(pos, found, steps):
        length = at(pos) * 2 ** 24 + at(pos + 1) * 2 ** 16 + at(pos + 2) * 2 ** 8 + at(pos + 3)
        iend = tf.reduce_all(tf.equal(tf.stack([at(pos + 4), at(pos + 5), at(pos + 6),
                                                at(pos + 7)]), [73, 69, 78, 68]))  # b"IEND"
        end = pos + 12 + length
        # past IEND the walk is over: found when the whole IEND chunk is there
        return tf.where(iend, size + 1, end), tf.logical_and(iend, end <= size), steps + 1

    def cond(pos, found, steps):
        return tf.logical_and(tf.logical_and(tf.logical_not(found), pos + 12 <= size),
                              steps < WALK_MAX_STEPS)

    _, found, steps = tf.while_loop(cond, body, (tf.constant(8, tf.int64), tf.constant(False),
                                                 tf.constant(0, tf.int64)),
                                    parallel_iterations=1)
    return found, tf.logical_or(found, steps < WALK_MAX_STEPS)


def jpeg_complete(data):
    """Whether a JPEG ends its image data: an EOI marker (FF D9) after its last
    start-of-scan marker (FF DA). In entropy-coded data every FF byte is followed by 00 or a
    restart marker, so these pairs are real markers; a file cut inside its scans has none."""
    b = tf.io.decode_raw(data, tf.uint8)
    ff = tf.equal(b[:-1], 0xFF)

    def last(marker):  # position of the last FF <marker> pair, -1 when there is none
        found = tf.where(tf.logical_and(ff, tf.equal(b[1:], marker)))[:, 0]
        return tf.reduce_max(tf.concat([tf.constant([-1], tf.int64), found], 0))

    last_sos = last(0xDA)
    return tf.logical_and(last_sos >= 0, last(0xD9) > last_sos)


def jpeg_scans(data):
    """The FF DA (start of scan) pairs in `data` (int64): entropy-coded data cannot hold one,
    so this is at least the number of scans (an EXIF thumbnail's count too)."""
    b = tf.io.decode_raw(data, tf.uint8)
    pairs = tf.logical_and(tf.equal(b[:-1], 0xFF), tf.equal(b[1:], 0xDA))
    return tf.reduce_sum(tf.cast(pairs, tf.int64))


def _sniff(data, n):
    """(is_jpeg, is_png, is_gif, is_bmp, kind name) from the magic bytes."""
    head = tf.strings.substr(data, 0, tf.minimum(n, 8))
    is_jpeg = tf.equal(tf.strings.substr(head, 0, 3), _JPEG_MAGIC)
    is_png = tf.equal(head, _PNG_MAGIC)
    head6 = tf.strings.substr(head, 0, 6)
    is_gif = tf.logical_or(tf.equal(head6, b"GIF87a"), tf.equal(head6, b"GIF89a"))
    is_bmp = tf.equal(tf.strings.substr(head, 0, 2), b"BM")
    kind = tf.where(is_jpeg, "JPEG", tf.where(is_png, "PNG", tf.where(is_gif, "GIF", "BMP")))
    return is_jpeg, is_png, is_gif, is_bmp, kind


def _png_ihdr_check(label, data, n, is_png):
    """The assertion that a PNG has an IHDR chunk right after its signature."""
    padded = tf.strings.join([data, b"\0" * 16])
    png_ok = tf.logical_or(tf.logical_not(is_png), tf.logical_and(
        n >= 24, tf.equal(tf.strings.substr(padded, 12, 4), b"IHDR")))
    return check(png_ok, tf.strings.join([
        label, ": invalid PNG (no IHDR chunk after the signature)"]))


def _completeness_checks(label, data, n, is_jpeg, is_png, kind):
    """The assertions that PNG chunks run to IEND, JPEG scans end with EOI and are at most
    MAX_JPEG_SCANS (after the IHDR check)."""
    with tf.control_dependencies([_png_ihdr_check(label, data, n, is_png)]):
        complete, walked = tf.cond(
            is_png, lambda: png_complete(data),
            lambda: (tf.cond(is_jpeg, lambda: jpeg_complete(data), lambda: tf.constant(True)),
                     tf.constant(True)))
    scans = tf.cond(is_jpeg, lambda: jpeg_scans(data), lambda: tf.constant(0, tf.int64))
    return [
        check(walked, tf.strings.join([label, f": PNG with more than {WALK_MAX_STEPS} chunks; "
                                              f"re-encode it"])),
        check(scans <= MAX_JPEG_SCANS, tf.strings.join([label, tf.strings.format(
            ": JPEG of {} scans, more than the limit of {} (each scan of a progressive JPEG "
            "is decoded over the whole image)", (scans, MAX_JPEG_SCANS))])),
        check(complete, tf.strings.join([
            label, ": truncated ", kind, tf.strings.format(
                " data ({} bytes): the image ends before its last chunk / end marker; send "
                "the whole file", (n,))])),
    ]


def _declared_size_checks(label, declared, kind, max_pixels):
    """The assertions that the header's declared size is between 1 and max_pixels pixels."""
    pixels = declared[0] * declared[1]
    return [
        check(pixels > 0, tf.strings.join([
            label, ": the ", kind, tf.strings.format(
                " header declares {}x{} pixels (an empty or corrupt image)",
                (declared[0], declared[1]))])),
        check(pixels <= max_pixels, tf.strings.join([
            label, ": the ", kind, tf.strings.format(
                " header declares {}x{} = {} pixels, more than the limit of {} pixels "
                "(max_pixels)", (declared[0], declared[1], pixels, max_pixels))])),
    ]


def _frames(data, is_gif, declared, max_pixels):
    """(frames, height, width, finished): the GIF walk, else one frame of the declared size."""
    return tf.cond(
        is_gif, lambda: gif_frames(data, max_pixels),
        lambda: (tf.constant(1, tf.int64), declared[0], declared[1], tf.constant(True)))


def _frame_checks(label, frames, height, width, finished, max_pixels):
    """The assertions that the GIF walk finished and all frames fit in max_pixels."""
    total = frames * height * width
    return [
        check(finished, tf.strings.join([
            label, f": GIF with more than {WALK_MAX_STEPS} data blocks; re-encode it or send "
                   f"a PNG or JPEG"])),
        check(total <= max_pixels, tf.strings.join([
            label, tf.strings.format(
                ": GIF frames would decode to {} frame(s) x {}x{} = {} pixels (every frame is "
                "decoded at the size of the largest frame), more than the limit of {} pixels "
                "(max_pixels); send a still image", (frames, height, width, total,
                                                     max_pixels))])),
    ]


def _size_checks(label, data, n, is_jpeg, is_png, is_gif, kind, max_pixels):
    """The checks before decoding: complete PNG/JPEG data, the declared size, GIF frames."""
    with tf.control_dependencies(_completeness_checks(label, data, n, is_jpeg, is_png, kind)):
        declared = _declared_size(data, is_jpeg, is_png, is_gif)
    with tf.control_dependencies(_declared_size_checks(label, declared, kind, max_pixels)):
        frames, height, width, finished = _frames(data, is_gif, declared, max_pixels)
    return _frame_checks(label, frames, height, width, finished, max_pixels)


def decode_guarded(data, index, size, max_bytes, max_pixels):
    """Decode one encoded image (scalar string) to uint8 [size, size, 3] after the guards;
    also returns its original [height, width] (int32). Any problem raises InvalidArgument
    naming `image_bytes[index]`."""
    label = tf.strings.format("image_bytes[{}]", (index,))
    n = tf.strings.length(data)
    checks = [
        check(n > 0, tf.strings.join([label, ": empty string; expected the bytes of a JPEG, "
                                             "PNG, BMP or GIF image"])),
        check(n <= max_bytes, tf.strings.join([
            label, tf.strings.format(": {} bytes, more than the limit of {} bytes "
                                     "(max_bytes)", (n, max_bytes))])),
    ]
    with tf.control_dependencies(checks):
        is_jpeg, is_png, is_gif, is_bmp, kind = _sniff(data, n)
    known = tf.reduce_any(tf.stack([is_jpeg, is_png, is_gif, is_bmp]))
    with tf.control_dependencies([check(known, tf.strings.join([
            label, ": not a JPEG, PNG, BMP or GIF image (undecodable bytes)"]))]):
        checks = _size_checks(label, data, n, is_jpeg, is_png, is_gif, kind, max_pixels)
    with tf.control_dependencies(checks):
        data = tf.identity(data)
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    image = tf.ensure_shape(image, [None, None, 3])
    hw = tf.shape(image)[:2]
    decoded = tf.cast(hw[0], tf.int64) * tf.cast(hw[1], tf.int64)
    with tf.control_dependencies([check(
            tf.logical_and(decoded > 0, decoded <= max_pixels), tf.strings.join([
                label, tf.strings.format(": decoded to {}x{} pixels; expected between 1 and "
                                         "{} pixels (max_pixels)",
                                         (hw[0], hw[1], max_pixels))]))]):
        image = resize_uint8(image, size)
    return image, hw


def batch_checks(n, max_batch, what):
    """Assertions that a request holds between 1 and max_batch images."""
    return [check(n >= 1, tf.constant(f"{what}: no images given (batch of 0)")),
            check(n <= max_batch, tf.strings.join([
                tf.strings.format(f"{what}: {{}} images in one request, more than the limit "
                                  "of {} (max_batch)", (n, max_batch))]))]
