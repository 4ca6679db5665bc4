"""Small file readers that turn every failure into a `BadSampleError` naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from unifashion.data.errors import BadSampleError


def require_dir(path: Path, what: str) -> Path:
    """Return `path` if it is a directory, else raise FileNotFoundError naming it and `what`."""
    if not path.is_dir():
        raise FileNotFoundError(f"dataset root {path} does not exist or is not a directory; expected {what}")
    return path


def load_image(path: Path) -> Image.Image:
    """Open and fully decode an image as RGB.

    Raises:
        BadSampleError: "missing_file" if it does not exist, "corrupt_image" if PIL cannot decode
            it completely (truncated bytes, not an image).
    """
    if not path.is_file():
        raise BadSampleError(path, "missing_file", "image file not found")
    try:
        with Image.open(path) as im:
            im.load()  # decodes every byte: a truncated file raises here
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadSampleError(path, "corrupt_image", f"cannot decode image ({e})") from e


def read_json(path: Path, expect: type, what: str) -> Any:
    """Read a JSON file whose top level must be of type `expect`.

    Raises:
        BadSampleError: "missing_file" / "malformed_json" naming the file and `what` was expected.
    """
    if not path.is_file():
        raise BadSampleError(path, "missing_file", f"file not found; expected {what}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except UnicodeDecodeError as e:
        raise BadSampleError(
            path, "bad_encoding", f"byte {e.object[e.start:e.start + 1]!r} at offset {e.start} is not valid UTF-8 "
            f"(JSON files are UTF-8); expected {what}"
        ) from e
    except json.JSONDecodeError as e:
        raise BadSampleError(path, "malformed_json", f"invalid JSON ({e}); expected {what}") from e
    if not isinstance(data, expect):
        raise BadSampleError(
            path, "malformed_json", f"top level is {type(data).__name__}, expected {what}"
        )
    return data


def read_lines(path: Path, encoding: str = "utf-8") -> list[tuple[int, str | BadSampleError]]:
    """The lines of a text file, decoded one by one: ``(line number, text)``, or ``(line number,
    BadSampleError("bad_encoding"))`` for a line whose bytes are not valid `encoding` (the caller
    applies its bad-sample policy, so one bad line does not hide the others).

    Raises:
        BadSampleError: "missing_file" when the file does not exist.
    """
    if not path.is_file():
        raise BadSampleError(path, "missing_file", "file not found")
    out: list[tuple[int, str | BadSampleError]] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                out.append((lineno, raw.decode(encoding)))
            except UnicodeDecodeError as e:
                out.append((lineno, BadSampleError(
                    f"{path}:{lineno}", "bad_encoding",
                    f"byte {raw[e.start:e.start + 1]!r} at column {e.start} is not valid {encoding}")))
    return out


def is_blank(text: str) -> bool:
    """True for an empty or whitespace-only text."""
    return not text.strip()


def find_image(folder: Path, stem: str, extensions: tuple[str, ...]) -> Path:
    """The first existing ``folder/<stem><ext>`` over `extensions` (probed in order).

    Raises:
        BadSampleError: "missing_file" listing every path probed.
    """
    for ext in extensions:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    probed = ", ".join(f"{stem}{ext}" for ext in extensions)
    raise BadSampleError(folder / f"{stem}{extensions[0]}", "missing_file", f"no image found (probed {probed})")
