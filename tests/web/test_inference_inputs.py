"""Inference inputs decoded as people send them, and refused as attackers send them: images
(PNG, JPEG) brought to the data set's form, JSON, CSV and NPY, each checked before it is
used."""

from __future__ import annotations

import dataclasses
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedgate.core.data import load_dataset
from fedgate.core.inference import InputSpec, as_batch
from fedgate.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from fedgate.web import inputs
from fedgate.web.inputs import Body, Kind, body_limit, decode, kind_of, sniff
from tests.web.images import bomb_png, digit_png, encoded, pickled_npy, truncated_jpeg

DIGITS = load_dataset("digits")
SPEC = InputSpec.of(DIGITS)
PLAIN = dataclasses.replace(SPEC, background=None)  # as photographs are taken: no cropping
QUANTUM = 1 / 255 + 1e-6  # what an 8-bit picture can hold


def image(data: bytes, spec: InputSpec = SPEC) -> np.ndarray:
    return decode(data, Kind.IMAGE, spec)


def test_a_picture_of_the_models_size_is_its_pixels() -> None:
    digit = DIGITS.x_test[0]
    decoded = image(digit_png(digit, scale=1), PLAIN)
    assert decoded.shape == (1, 1, 8, 8) and decoded.dtype == np.float32
    assert np.abs(decoded[0] - digit.numpy()).max() <= QUANTUM


def test_a_digit_is_the_same_input_however_it_is_drawn() -> None:
    """Larger, dark on white, small on a large sheet, on a transparent canvas, as a JPEG:
    the model is given the same strokes (up to the 8-bit steps of the pictures)."""
    digit = DIGITS.x_test[7]
    reference = image(digit_png(digit))
    assert reference.shape == (1, 1, 8, 8)
    assert np.allclose(image(digit_png(digit, dark_on_white=True)), reference, atol=1e-6)
    on_sheet = image(digit_png(digit, 5, dark_on_white=True, canvas=400))
    assert np.abs(on_sheet - reference).mean() < 0.05  # resampled from another size
    strokes = Image.open(io.BytesIO(digit_png(digit, dark_on_white=True))).convert("L")
    transparent = Image.new("LA", strokes.size, (0, 0))
    transparent.putalpha(Image.eval(strokes, lambda v: 255 - v))  # ink where it was dark
    assert np.allclose(image(encoded(transparent, "PNG")), reference, atol=QUANTUM)
    as_jpeg = image(encoded(Image.open(io.BytesIO(digit_png(digit))), "JPEG", quality=95))
    assert np.abs(as_jpeg - reference).max() < 0.1  # lossy


def test_colour_pictures_become_the_models_channels() -> None:
    rgb = np.zeros((24, 24, 3), dtype=np.uint8)
    rgb[:, :, 0] = 255  # red
    colour = dataclasses.replace(PLAIN, channels=3)
    decoded = image(encoded(Image.fromarray(rgb, "RGB"), "PNG"), colour)
    assert decoded.shape == (1, 3, 8, 8)
    assert np.allclose(decoded[0, 0], 1.0) and np.allclose(decoded[0, 1:], 0.0)
    grey = image(encoded(Image.fromarray(rgb, "RGB"), "PNG"), PLAIN)
    assert grey.shape == (1, 1, 8, 8) and np.allclose(grey, 76 / 255, atol=QUANTUM)


def test_pictures_too_large_are_refused_from_their_header() -> None:
    for bomb, says in (
        (bomb_png(), "too large to decode"),  # 2.5 G pixels: Pillow's own limit
        (bomb_png(5_000, 5_000), "more than the 16,777,216 pixels"),  # 25 M: ours
    ):
        started = time.monotonic()
        with pytest.raises(PayloadTooLarge, match=says):
            image(bomb)
        assert time.monotonic() - started < 0.5
    assert inputs.max_image_pixels(SPEC) == 4096 * 4096


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (truncated_jpeg(), "cannot be decoded"),
        (bomb_png(16, 16)[:-20], "cannot be decoded"),
        (b"GIF89a" + bytes(100), "not a PNG or JPEG"),
        (b"\x89PNG\r\n\x1a\n" + bytes(50), "not a PNG or JPEG"),
        (b"", "not a PNG or JPEG"),
    ],
)
def test_broken_pictures_are_refused(data: bytes, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        image(data)


def test_json_is_an_input_or_a_batch() -> None:
    batch = DIGITS.x_test[:3].numpy()
    assert np.array_equal(decode(json.dumps(batch.tolist()).encode(), Kind.JSON, SPEC), batch)
    wrapped = json.dumps({"inputs": batch[0].tolist()}).encode()
    assert np.array_equal(decode(wrapped, Kind.JSON, SPEC), batch[0])
    with pytest.raises(InvalidInput, match="does not fit the model"):
        as_batch(decode(json.dumps(batch[0][0].tolist()).encode(), Kind.JSON, SPEC), SPEC)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[[[NaN]]]", "NaN is not a number"),
        ("[Infinity, 1]", "Infinity is not a number"),
        (json.dumps([[[1] * 8] * 7 + [[1] * 7 + ["INF"]]]).replace('"INF"', "1e999"), None),
        ("[[1, 2], [3]]", "ragged"),
        ('[["1", "2"]]', "numbers only"),
        ("[true, false]", "numbers only"),
        ("[null]", "numbers only"),
        ('{"a": 1}', "a JSON array"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("[1, 2", "not valid JSON"),
        ("[" + "9" * 5000 + "]", "not valid JSON"),
    ],
)
def test_json_that_is_not_an_array_of_numbers_is_refused(text: str, says: str | None) -> None:
    if says is None:
        with pytest.raises(InvalidInput, match="finite"):
            as_batch(decode(text.encode(), Kind.JSON, SPEC), SPEC)
        return
    with pytest.raises(InvalidInput, match=says):
        decode(text.encode(), Kind.JSON, SPEC)


def test_csv_rows_are_flattened_inputs() -> None:
    rows = DIGITS.x_test[:4].reshape(4, 64).numpy()
    names = ",".join(f"pixel_{i}" for i in range(64))
    text = names + "\n" + "\n".join(",".join(f"{v:g}" for v in row) for row in rows) + "\n\n"
    decoded = decode(text.encode(), Kind.CSV, SPEC)
    assert np.array_equal(decoded, rows)
    assert torch.equal(as_batch(decoded, SPEC), DIGITS.x_test[:4])


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("1,2,3\n", "row 1 has 3 values; an input is 64"),
        ("\n".join([",".join(["0"] * 64)] * 257), "at most 256 rows"),
        (",".join(["0"] * 64) + "\n" + ",".join(["x"] * 64), "row 2 holds something"),
        ("names\n", "no rows of numbers"),
    ],
)
def test_csv_that_does_not_fit_is_refused(text: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        decode(text.encode(), Kind.CSV, SPEC)
    with pytest.raises(InvalidInput, match="not UTF-8"):
        decode(b"\xff\xfe\x00", Kind.CSV, SPEC)


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def test_npy_arrays_of_numbers_in_any_byte_order() -> None:
    batch = DIGITS.x_test[:5].numpy()
    for array in (batch, batch.astype(">f8"), np.asfortranarray(batch), (batch * 16).astype("u1")):
        decoded = decode(npy(array), Kind.NPY, SPEC)
        assert decoded.dtype == np.float32 and np.array_equal(decoded, array.astype(np.float32))


def test_npy_files_are_read_without_unpickling_and_checked_against_their_header(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(InvalidInput, match="must hold numbers, not object"):
        decode(pickled_npy(marker), Kind.NPY, SPEC)
    assert not marker.exists()
    whole = npy(np.zeros((2, 1, 8, 8), dtype=np.float32))
    with pytest.raises(InvalidInput, match="declares"):
        decode(whole[:-4], Kind.NPY, SPEC)
    with pytest.raises(InvalidInput, match="declares"):
        decode(whole + b"\x00" * 4, Kind.NPY, SPEC)
    forged = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**15, 1, 8, 8)}
    np.lib.format.write_array_header_1_0(forged, header)
    with pytest.raises(InvalidInput, match=r"declares \[1000000000000000, 1, 8, 8\]"):
        decode(forged.getvalue() + bytes(256), Kind.NPY, SPEC)
    for broken in (b"\x93NUMPY\x09\x00", b"not an npy file", b""):
        with pytest.raises(InvalidInput, match="not an NPY file"):
            decode(broken, Kind.NPY, SPEC)
    with pytest.raises(InvalidInput, match="not complex"):
        decode(npy(np.zeros((1, 1, 8, 8), dtype=np.complex64)), Kind.NPY, SPEC)


def test_media_types_and_body_limits() -> None:
    assert kind_of("image/png") is Kind.IMAGE and kind_of("text/csv") is Kind.CSV
    for unknown in ("text/plain", "", "image/gif", "application/octet-stream"):
        with pytest.raises(UnsupportedMediaType, match="cannot predict from"):
            kind_of(unknown)
    assert body_limit("image/jpeg", SPEC) == 20 << 20
    assert body_limit("application/json", SPEC) == 256 * 64 * 32  # numbers of a full batch
    assert body_limit("application/x-npy", SPEC) == (64 << 10) + 256 * 64 * 8
    with pytest.raises(UnsupportedMediaType):
        body_limit("text/html", SPEC)


def test_a_multipart_files_kind_is_sniffed_when_it_does_not_say() -> None:
    png, npy_file = digit_png(DIGITS.x_test[0]), npy(np.zeros((1, 64)))
    octet = "application/octet-stream"
    assert sniff(Body(png, octet)) is Kind.IMAGE
    assert sniff(Body(npy_file, octet, "batch.bin")) is Kind.NPY
    assert sniff(Body(b"0,1\n", octet, "inputs.CSV")) is Kind.CSV
    assert sniff(Body(b"  [[0]]", "")) is Kind.JSON
    assert sniff(Body(png, "text/csv")) is Kind.CSV  # what it says wins
    with pytest.raises(UnsupportedMediaType):
        sniff(Body(b"hello", "text/plain", "notes.txt"))
