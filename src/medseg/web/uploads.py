"""Decode an uploaded image from its bytes, in memory, with limits checked before any pixel is decoded.

The type is found from the content (magic bytes and the decoders), never from the file name, and the
result is the array :func:`medseg.io.read_image` returns for the same file, so a mask from the web app
equals the one ``medseg predict`` writes. Every refusal is an :class:`UploadError` carrying the HTTP
status the API answers with.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np

from medseg.errors import DataError

# Pillow's own bomb check starts at about 89 megapixels; medseg refuses earlier, from the header: one
# segmentation with `unet` needs about 100 bytes per pixel on CPU (0.4 GB more at 2048x2048 than at
# 1024x1024), so 25 megapixels (5000x5000) stay within a few GB.
DEFAULT_MAX_PIXELS = 25_000_000
ACCEPTED = "PNG, JPEG, TIFF, BMP or DICOM"

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PILLOW_FORMATS = ("PNG", "JPEG", "BMP")
_MAX_CHANNELS = 16


class UploadError(DataError):
    """An upload the server refuses; ``status`` is the HTTP status code of the answer."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, name: str = "upload", *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an uploaded image file.

    Args:
        data: the file's bytes (PNG, JPEG, BMP, TIFF; DICOM when pydicom is installed).
        name: shown in error messages only; never used as a path.
        max_pixels: largest accepted height x width, checked from the header before decoding.

    Returns:
        ``(H, W)`` or ``(H, W, C)`` array in its stored dtype, as :func:`medseg.io.read_image` returns.

    Raises:
        UploadError: empty or not an image (415), DICOM without pydicom (415), too many pixels, a
            stack instead of a 2D image, or a corrupt file (422).
    """
    if not data:
        raise UploadError(f"{name}: the file is empty", 422)
    if data[128:132] == b"DICM":  # first: a DICOM preamble may itself look like a TIFF header
        array = _decode_dicom(data, name, max_pixels)
    elif data[:4] in _TIFF_MAGIC:
        array = _decode_tiff(data, name, max_pixels)
    else:
        array = _decode_pillow(data, name, max_pixels)
    from medseg.io.images import tidy_channels  # the same clean-up as read_image

    try:
        return tidy_channels(array, name)
    except DataError as exc:
        raise UploadError(str(exc)) from None


def _check_pixels(name: str, height: int, width: int, max_pixels: int) -> None:
    if height * width > max_pixels:
        raise UploadError(
            f"{name}: the image is {width}x{height} = {height * width:,} pixels; "
            f"this server accepts at most {max_pixels:,} (--max-pixels)",
            422,
        )


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines and lines[0] else type(exc).__name__


def _decode_pillow(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from medseg.io.images import decode_with_pillow  # the decoder read_image uses, incl. 16-bit colour PNG

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS) as img:
                width, height = img.size
        except UnidentifiedImageError as exc:
            raise UploadError(f"{name}: not an image medseg can read (send {ACCEPTED})", 415) from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise UploadError(f"{name}: too many pixels ({_reason(exc)})", 422) from exc
        except Exception as exc:  # a header the decoder rejects
            raise UploadError(f"{name}: cannot read image ({_reason(exc)})", 422) from exc
        _check_pixels(name, height, width, max_pixels)
        try:
            return decode_with_pillow(io.BytesIO(data), palette_indices=False)
        except Exception as exc:  # truncated or corrupt pixel data; each decoder has its own errors
            raise UploadError(f"{name}: cannot read image ({_reason(exc)})", 422) from exc


def _decode_tiff(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    import tifffile

    from medseg.io.images import tiff_channels_last  # read_image's rules for where the channels are

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            series = tif.series[0]
            shape, axes = tuple(series.shape), series.axes
            yx = [size for size, code in zip(shape, axes) if code in "YX"]
            height, width = yx if len(yx) == 2 else sorted(shape)[-2:]
            _check_pixels(name, height, width, max_pixels)
            if math.prod(shape) > max_pixels * _MAX_CHANNELS:
                raise UploadError(f"{name}: expected a 2D image, got a stack of shape {shape} (axes {axes})")
            array = np.asarray(series.asarray())
    except UploadError:
        raise
    except Exception as exc:
        raise UploadError(f"{name}: cannot read TIFF ({_reason(exc)})", 422) from exc
    try:
        return tiff_channels_last(name, array, axes)
    except DataError as exc:
        raise UploadError(str(exc), 422) from exc


def _decode_dicom(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    try:
        import pydicom
    except ImportError as exc:
        raise UploadError(
            f"{name}: a DICOM file; reading DICOM needs pydicom, which this server does not have "
            "(pip install pydicom, then restart medseg serve), or convert the image to PNG or TIFF",
            415,
        ) from exc
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        _check_pixels(name, int(dataset.Rows), int(dataset.Columns), max_pixels)
        if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
            raise UploadError(f"{name}: a multi-frame DICOM; send one 2D frame")
        from pydicom.pixels import apply_modality_lut

        # rescale slope/intercept (e.g. CT Hounsfield units), as the values were meant to be read
        return np.asarray(apply_modality_lut(dataset.pixel_array, dataset), dtype=np.float32)
    except UploadError:
        raise
    except Exception as exc:
        raise UploadError(f"{name}: cannot read DICOM ({_reason(exc)})", 422) from exc
