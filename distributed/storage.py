"""Local paths and object-store URIs behind one pyarrow filesystem interface.

``resolve("out/ds")`` and ``resolve("s3://bucket/ds?endpoint_override=...")``
both give a :class:`Location`: a pyarrow filesystem and a path inside it. S3
credentials come from the usual environment variables (``AWS_ACCESS_KEY_ID``,
...), which a local Ray cluster's workers inherit.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import pyarrow.fs as pafs


@dataclass(frozen=True)
class Location:
    fs: pafs.FileSystem
    path: str  # inside ``fs``, no trailing slash
    uri: str  # as the user gave it

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> str:
        return "/".join([self.path, *parts])


def resolve(path_or_uri: str) -> Location:
    """A local path or a URI (``s3://``, ``gs://``, ``file://``, ...) as a :class:`Location`."""
    if "://" in path_or_uri:
        fs, path = pafs.FileSystem.from_uri(path_or_uri)
    else:
        fs, path = pafs.LocalFileSystem(), os.path.abspath(path_or_uri)
    return Location(fs, path.rstrip("/"), path_or_uri)


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def list_files(fs: pafs.FileSystem, folder: str, suffix: str) -> list[pafs.FileInfo]:
    """Files directly in ``folder`` ending in ``suffix``, sorted by name; [] if no folder."""
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    return sorted((i for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix)),
                  key=lambda i: i.path)


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def write_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write ``data`` so that readers see the old file or the whole new one, never a part.

    Object stores publish an object only when its upload completes; on file
    systems we write a temporary file beside it and rename it into place.
    """
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, (pafs.LocalFileSystem, pafs.SubTreeFileSystem)):
        tmp = f"{path}.tmp-{os.getpid()}"
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, path)
    else:
        with fs.open_output_stream(path) as f:
            f.write(data)


def append_text(fs: pafs.FileSystem, path: str, text: str) -> None:
    """Add ``text`` to the end of a small log file. Object stores cannot append, so there
    the whole file is written again (atomically); a local file is appended to.

    For a training run's ``metrics.jsonl`` (a line of under 1 KB per epoch) that is under
    5 MB uploaded over 100 epochs, against the checkpoint each epoch uploads (``model.pt``,
    ``best.pt`` and ``state.pt``: about 25 MB for the default model): not worth an object
    per line and a reader that joins them."""
    if isinstance(fs, pafs.LocalFileSystem):
        with open(path, "a") as f:
            f.write(text)
        return
    old = read_bytes(fs, path) if exists(fs, path) else b""
    write_atomic(fs, path, old + text.encode())


def sha256_of(fs: pafs.FileSystem, path: str, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
