"""core/images.py: decoding, validation and resizing of camera frames; every bad case names the problem."""
import numpy as np
import pytest

from vla_jepa_ros.core.images import (ImageError, area_resize_matrix, check_rgb, decode_compressed,
                                      device_resize_matrices, encode_compressed, raw_to_rgb, resize_rgb,
                                      to_model_input)


def _rgb(h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_raw_rgb8_and_bgr8_with_padded_step():
    img = _rgb()
    padded = np.zeros((48, 64 * 3 + 8), np.uint8)
    padded[:, :64 * 3] = img.reshape(48, -1)
    assert np.array_equal(raw_to_rgb(padded.tobytes(), 64, 48, 64 * 3 + 8, "rgb8"), img)
    bgr = img[:, :, ::-1].copy()
    assert np.array_equal(raw_to_rgb(bgr.tobytes(), 64, 48, 64 * 3, "bgr8"), img)


@pytest.mark.parametrize("kwargs, message", [
    (dict(encoding="mono16"), "unsupported encoding 'mono16'"),
    (dict(step=64 * 3 - 1), "step 191 < width*channels 192"),
    (dict(data_bytes=64 * 3 * 48 - 1), "truncated data: 9215 bytes, expected step*height = 9216"),
    (dict(width=0), "empty image 0x48"),
    (dict(expected=(32, 48)), "wrong size 64x48, expected 32x48"),
])
def test_raw_bad_cases_name_the_problem(kwargs, message):
    data = _rgb().tobytes()[:kwargs.get("data_bytes", 64 * 3 * 48)]
    with pytest.raises(ImageError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        raw_to_rgb(data, kwargs.get("width", 64), 48, kwargs.get("step", 64 * 3), kwargs.get("encoding", "rgb8"),
                   expected_wh_px=kwargs.get("expected"))


def test_png_roundtrip_is_exact_and_jpeg_close():
    img = _rgb()
    assert np.array_equal(decode_compressed(encode_compressed(img, "png"), "png"), img)
    smooth = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 1, 3))
    out = decode_compressed(encode_compressed(smooth, "jpeg", quality=95), "rgb8; jpeg compressed bgr8")
    assert out.shape == smooth.shape and np.abs(out.astype(int) - smooth).mean() < 3


def test_jpeg_channel_order_is_rgb():
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    out = decode_compressed(encode_compressed(red, "jpeg"), "jpeg")
    assert out[..., 0].mean() > 240 and out[..., 2].mean() < 15


@pytest.mark.parametrize("payload, fmt, message", [
    (b"", "jpeg", "empty jpeg payload"),
    (b"not an image at all", "jpeg", "undecodable jpeg"),
    (b"\x89PNG garbage", "png", "undecodable png"),
    (None, "jpeg", "truncated jpeg"),
    (b"\xff\xd8", "tiff", "unsupported compressed format 'tiff'"),
])
def test_compressed_bad_cases(payload, fmt, message):
    if payload is None:
        payload = encode_compressed(_rgb(), "jpeg")[:-200]
    with pytest.raises(ImageError, match=message):
        decode_compressed(payload, fmt)


def test_compressed_wrong_size():
    with pytest.raises(ImageError, match="wrong size 64x48, expected 640x480"):
        decode_compressed(encode_compressed(_rgb(), "png"), "png", expected_wh_px=(640, 480))


def test_resize_and_model_input_layout():
    img = _rgb(480, 640)
    small = resize_rgb(img, 128)
    assert small.shape == (128, 128, 3) and small.dtype == np.uint8
    assert resize_rgb(_rgb(32, 32), 128).shape == (128, 128, 3)  # upscaling works too
    x = to_model_input([img, _rgb(128, 128, seed=1)], 128)
    assert x.shape == (1, 2, 3, 128, 128) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_allclose(x[0, 1], _rgb(128, 128, seed=1).transpose(2, 0, 1) / 255.0, atol=1e-6)


@pytest.mark.parametrize("h, w, size", [(480, 640, 128), (240, 320, 128), (256, 256, 128), (480, 640, 224),
                                         (131, 517, 128), (720, 1280, 224), (128, 128, 128)])
def test_matrix_resize_is_opencvs_area_resize(h, w, size):
    """Wy @ frame @ Wx^T, rounded half up (what a backend does on its device in float32), gives resize_rgb's
    INTER_AREA output to 1/255, exactly where the scale is whole, on noise (the worst case) and a smooth image."""
    import cv2

    wy, wx = device_resize_matrices(h, w, size)
    assert wy.shape == (size, h) and wx.shape == (size, w) and wy.dtype == np.float32
    np.testing.assert_allclose(wy.sum(axis=1), 1.0, atol=1e-6)  # every output pixel is an average
    for img in (_rgb(h, w), cv2.GaussianBlur(_rgb(h, w, seed=1), (0, 0), 3)):
        f = img.astype(np.float32).transpose(2, 0, 1)  # (3, H, W)
        out = np.floor(wy @ f @ wx.T + 0.5).transpose(1, 2, 0)  # (S, S, 3)
        diff = np.abs(out - resize_rgb(img, size).astype(np.float32))
        assert diff.max() <= 1.0 and (diff > 0).mean() < 0.01
        if h % size == 0 and w % size == 0:
            assert diff.max() == 0.0


def test_matrix_resize_only_shrinks():
    assert device_resize_matrices(100, 640, 128) is None  # resize_rgb would enlarge the height: host path
    with pytest.raises(ImageError, match="dst_px=200 <= src_px=100"):
        area_resize_matrix(100, 200)


def test_check_rgb_rejects_wrong_dtype_and_shape():
    with pytest.raises(ImageError, match="float32"):
        check_rgb(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ImageError, match=r"shape \(4, 4\)"):
        check_rgb(np.zeros((4, 4), np.uint8))


@pytest.mark.parametrize("encoding, channels", [("rgba8", 4), ("bgra8", 4), ("mono8", 1)])
def test_other_raw_encodings_become_rgb(encoding, channels):
    rgb = np.random.default_rng(1).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    if encoding == "rgba8":
        raw = np.concatenate([rgb, np.full((4, 5, 1), 7, np.uint8)], axis=2)
    elif encoding == "bgra8":
        raw = np.concatenate([rgb[:, :, ::-1], np.full((4, 5, 1), 7, np.uint8)], axis=2)
    else:
        raw = rgb[:, :, :1]
        rgb = np.repeat(raw, 3, axis=2)
    out = raw_to_rgb(raw.tobytes(), 5, 4, 5 * channels, encoding)
    np.testing.assert_array_equal(out, rgb)
