"""CIFAR-10 on disk: where to look (``--data-dir``, ``$FASTNET_DATA``, ``~/.cache/fastnet``),
downloading the official archive with its md5 checked, and unpacking it safely (no path
traversal, no links, a size limit)."""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import struct
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from fastnet.errors import DataError
from fastnet.util.reader import open_regular

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
REQUIRED = (*TRAIN_BATCHES, TEST_BATCH)
MAX_ARCHIVE_BYTES = 2 << 30    # the official archive unpacks to 178 MB
MAX_MEMBERS = 1000             # it has 8 (the folder and 7 files)
TIMEOUT = 60.0                 # seconds without data before a download gives up
_CHUNK = 1 << 20


def default_data_dir() -> Path:
    """Return where fastnet keeps CIFAR-10 unless told otherwise.

    Returns
    -------
    Path
        ``$FASTNET_DATA`` if set, else the per-user cache folder of :mod:`platformdirs`
        (``$XDG_CACHE_HOME/fastnet``, else ``~/.cache/fastnet`` on Linux; ``~/Library/Caches/fastnet``
        on macOS; the local application data folder on Windows).
    """
    if os.environ.get("FASTNET_DATA"):
        return Path(os.environ["FASTNET_DATA"]).expanduser()
    from platformdirs import user_cache_path

    return user_cache_path("fastnet", appauthor=False)


def _missing(folder: Path) -> list[str]:
    """Names of the batch files that ``folder`` lacks (all of them if it is no folder)."""
    return [name for name in REQUIRED if not (folder / name).is_file()]


def find_cifar10(data_dir: str | os.PathLike[str] | None = None, *, download: bool = False,
                 url: str = OFFICIAL_URL, md5: str | None = OFFICIAL_MD5,
                 progress: bool = True) -> Path:
    """Locate the ``cifar-10-batches-py`` folder, extracting or downloading it if asked.

    Parameters
    ----------
    data_dir : path or None
        The ``cifar-10-batches-py`` folder itself, a folder that contains it, or a folder that
        contains ``cifar-10-python.tar.gz`` (extracted beside the archive on first use), or
        that archive itself. None means :func:`default_data_dir`.
    download : bool
        If nothing is found, download the archive from ``url`` into ``data_dir`` and extract it.
    url, md5, progress
        Passed to :func:`download_cifar10`; ``md5`` is also what an archive named
        ``cifar-10-python.tar.gz`` must have to be extracted (see :func:`extract_cifar10`).

    Returns
    -------
    Path
        The folder holding ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``.

    Raises
    ------
    DataError
        If the data is not found (the message lists every place looked in), or an archive or
        download is bad.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz")):
        return extract_cifar10(root, root.parent, md5=md5)
    if root.is_dir() and not _missing(root):
        return root
    folder, archive = root / FOLDER, root / ARCHIVE
    if folder.exists() or archive.is_file():
        return extract_cifar10(archive, root, md5=md5)   # returns a complete folder or says what is wrong
    if download:
        return extract_cifar10(download_cifar10(root, url, md5, progress), root, md5=md5)
    if len(missing := _missing(root)) < len(REQUIRED):
        raise DataError(f"{root} holds only some CIFAR-10 batch files (missing "
                        f"{', '.join(missing)}); get the whole data set with `fastnet download`")
    raise DataError(
        f"CIFAR-10 not found: looked for the batch files in {root}, in {folder} and for the "
        f"archive {archive}; run `fastnet download` (or pass --download), or point --data-dir "
        f"or FASTNET_DATA at a folder that holds {FOLDER} or {ARCHIVE}")


def _copy_file_url(url: str, output_file: str, pooch_obj=None, progress: bool = False) -> None:
    """A pooch downloader for ``file://`` URLs (a local mirror; pooch itself has none): the
    file copied through :mod:`urllib.request`, with tqdm's bar as pooch draws it for HTTP."""
    from tqdm.auto import tqdm

    with urllib.request.urlopen(url, timeout=TIMEOUT) as response, open(output_file, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, ascii=True, ncols=79, file=sys.stderr, disable=not progress, leave=True) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))


def _retrieve(url: str, dest: Path, md5: str | None, progress: bool) -> None:
    """``url`` into ``dest / ARCHIVE`` through :func:`pooch.retrieve`: a temporary file in
    ``dest``, checked against ``md5`` (if given) and moved into place only when complete and
    correct. pooch's own log lines are kept quiet."""
    import functools

    import pooch

    if url.startswith("file:"):
        downloader = functools.partial(_copy_file_url, progress=progress)
    elif url.startswith(("http:", "https:")):
        downloader = pooch.HTTPDownloader(progressbar=progress, timeout=TIMEOUT)
    else:
        downloader = pooch.choose_downloader(url, progressbar=progress)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        pooch.retrieve(url, known_hash=f"md5:{md5.lower()}" if md5 else None, fname=ARCHIVE, path=dest, downloader=downloader)
    finally:
        logger.setLevel(level)


def _download_error(url: str, final: Path, md5: str | None, exc: BaseException) -> DataError:
    """The sentence for a failed download (pooch and requests raise their own exceptions)."""
    text = str(exc)
    if isinstance(exc, ValueError) and "does not match the known hash" in text:
        got = re.search(r"got ([0-9a-f]{32})", text)
        return DataError(f"{url} has md5 {got.group(1) if got else 'different'}, expected {md5}: the download is corrupt or is "
                         f"not the CIFAR-10 archive; try again or check the URL")
    short = re.search(r"IncompleteRead\((\d+) bytes read, (\d+) more expected", text)
    if short:
        done, more = int(short.group(1)), int(short.group(2))
        return DataError(f"download of {url} stopped after {done} of {done + more} bytes; try again")
    if isinstance(exc, urllib.error.HTTPError):
        exc.close()   # it holds the open connection
    reason = getattr(exc, "reason", None) if isinstance(exc, urllib.error.URLError) else None
    return DataError(f"could not download {url} to {final}: {reason or exc}; check the address, "
                     f"the connection and that {final.parent} is writable, or download the archive "
                     f"by hand and pass --data-dir")


def download_cifar10(dest_dir: str | os.PathLike[str], url: str = OFFICIAL_URL,
                     md5: str | None = OFFICIAL_MD5, progress: bool = True) -> Path:
    """Download the CIFAR-10 archive into ``dest_dir`` and check its md5 (with pooch).

    Parameters
    ----------
    dest_dir : path
        Folder to write ``cifar-10-python.tar.gz`` into (created if needed).
    url : str
        Where to get it: ``https``, ``http`` (pooch's downloader, over requests), ``ftp``,
        or ``file``.
    md5 : str or None
        Expected md5 hex digest; None skips the check.
    progress : bool
        Show a progress bar on stderr (tqdm).

    Returns
    -------
    Path
        The archive. pooch writes it under a temporary name and moves it into place only once
        complete and verified, so a file with the final name is always whole.

    Raises
    ------
    DataError
        If the download fails (the message names the URL and the reason) or the md5 differs.
    """
    dest = Path(dest_dir).expanduser()
    final = dest / ARCHIVE
    try:
        dest.mkdir(parents=True, exist_ok=True)
        _retrieve(url, dest, md5, progress)
    except (OSError, ValueError, HTTPException) as exc:   # requests' errors and timeouts are OSErrors
        raise _download_error(url, final, md5, exc) from None
    return final


def _member_path(member: tarfile.TarInfo, archive: Path) -> PurePosixPath:
    """The relative path of a safe archive member; DataError for anything else."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or "\\" in member.name or "\0" in member.name:
        problem = "has an unsafe path"
    elif not (path.parts and path.parts[0] == FOLDER):
        problem = f"is outside {FOLDER}/"
    elif not (member.isfile() or member.isdir()) or member.issparse():
        problem = "is a link or device (or a sparse file), not a regular file"
    elif member.size < 0:
        problem = f"claims a negative size ({member.size})"
    else:
        return path
    raise DataError(f"refusing to extract {archive}: member {short(member.name)!r} {problem}; "
                    f"this is not the CIFAR-10 archive, delete it and download it again")


def short(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (an archive can name a member anything)."""
    return text if len(text) <= limit else text[:limit] + "..."


def _extract_members(tar: tarfile.TarFile, archive: Path, into: Path) -> None:
    """Write the regular files of ``tar`` below ``into``, checking every member first: by
    fastnet's rules (:func:`_member_path`, :data:`MAX_MEMBERS`, :data:`MAX_ARCHIVE_BYTES`),
    then by the standard library's ``data`` filter (PEP 706) as a second opinion."""
    total = 0
    for count, member in enumerate(tar, start=1):
        if count > MAX_MEMBERS:
            raise DataError(f"refusing to extract {archive}: it has more than {MAX_MEMBERS} members, "
                            f"CIFAR-10 has 8; delete it and download it again")
        path = into.joinpath(*_member_path(member, archive).parts)
        try:
            tarfile.data_filter(member, str(into))
        except tarfile.FilterError as exc:
            raise DataError(f"refusing to extract {archive}: {exc}; delete it and download it again") from None
        if member.isdir():
            path.mkdir(parents=True, exist_ok=True)
            continue
        total += member.size
        if total > MAX_ARCHIVE_BYTES:
            raise DataError(f"refusing to extract {archive}: it unpacks to more than "
                            f"{MAX_ARCHIVE_BYTES >> 20} MB, far more than CIFAR-10")
        path.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        assert source is not None   # regular files always have contents
        with source, open(path, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)


def _check_official_md5(archive: Path, f, md5: str | None) -> None:
    """Refuse ``archive`` (open as ``f``) if its name says it is the official archive and its
    md5 is not ``md5``, whatever its size: a changed bit in it is refused even where the gzip
    CRC would not see it, and a file that only borrows the name is not taken for CIFAR-10."""
    if archive.name != ARCHIVE or md5 is None:
        return
    digest = hashlib.md5()
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
    f.seek(0)
    if digest.hexdigest() != md5.lower():
        raise DataError(f"{archive} has the official archive's name but md5 {digest.hexdigest()}, not {md5.lower()}: "
                        f"it is damaged or not the CIFAR-10 archive; delete it and download it again")


def _unpack(archive: Path, into: Path, md5: str | None) -> None:
    """Extract ``archive`` (read through the one reader) into ``into``: one pass over the
    gzip stream in tar stream mode (no seeking back, so no member can send the reader round
    in a loop), then the rest of the stream read to its end so that the gzip CRC and length
    are checked: a flipped bit anywhere is an error, not changed data."""
    with open_regular(archive, "archive", DataError) as f:
        _check_official_md5(archive, f, md5)
        with gzip.GzipFile(fileobj=f, mode="rb") as gz:
            with tarfile.open(fileobj=gz, mode="r|") as tar:
                _extract_members(tar, archive, into)
            while gz.read(_CHUNK):   # the padding after the tar's end, to the CRC
                pass


def extract_cifar10(archive: str | os.PathLike[str], dest_dir: str | os.PathLike[str], *,
                    md5: str | None = OFFICIAL_MD5) -> Path:
    """Safely extract the CIFAR-10 archive into ``dest_dir``, unless that was done already.

    Parameters
    ----------
    archive : path
        A ``.tar.gz`` whose members all lie below ``cifar-10-batches-py/``.
    dest_dir : path
        Folder to create ``cifar-10-batches-py`` in.
    md5 : str or None
        The md5 an archive named ``cifar-10-python.tar.gz`` must have, whatever its size (the
        official one by default); None skips it (as for a download without an md5). An
        archive under another name is checked by its gzip CRC and its members only.

    Returns
    -------
    Path
        ``dest_dir/cifar-10-batches-py``.

    Notes
    -----
    Absolute paths, ``..`` components, links, devices and members outside
    ``cifar-10-batches-py/`` are refused; only regular files are written. Extraction goes to
    a temporary folder inside ``dest_dir`` that is renamed into place when complete, so an
    interrupted extraction never looks complete.

    Raises
    ------
    DataError
        If the archive is unsafe, truncated, corrupt, lacks batch files or is named as the
        official one without its md5, or an existing
        ``cifar-10-batches-py`` is incomplete.
    """
    archive, dest = Path(archive), Path(dest_dir)
    target = dest / FOLDER
    if target.exists():
        if missing := _missing(target):
            raise DataError(f"{target} is incomplete (missing {', '.join(missing)}); delete it "
                            f"and run `fastnet download` or extract {ARCHIVE} again")
        return target
    tmp: Path | None = None
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extracting-", dir=dest))
        _unpack(archive, tmp, md5)
        if missing := _missing(tmp / FOLDER):
            raise DataError(f"{archive} lacks {FOLDER}/{missing[0]}: it is not the CIFAR-10 "
                            f"python archive; delete it and download it again")
        os.rename(tmp / FOLDER, target)
    except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError, struct.error) as exc:
        # ValueError / struct.error: malformed headers (sparse maps, numbers) inside tarfile
        if not _missing(target):   # another process finished the same extraction first
            return target
        raise DataError(f"could not extract {archive} into {dest}: {short(str(exc), 200)}; if the archive is "
                        f"truncated or corrupt, delete it and download it again") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
