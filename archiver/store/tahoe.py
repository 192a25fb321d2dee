"""TahoeFS: a pyFilesystem2 filesystem over the Tahoe-LAFS web API, and the tahoe:// opener.

``TahoeFS("http://127.0.0.1:3456", "URI:DIR2:...")`` roots the filesystem at a directory
capability. Files are written as immutable CHK files (``upload(..., format="MDMF")`` for a
mutable one) and streamed both ways: nothing holds a whole file in memory.

Traps of Tahoe's web API (1.20) this module avoids:
  * ``t=mkdir&name=`` replaces an existing directory unless ``replace=false``;
  * a PUT or a path-form mkdir creates missing parents, so parents are checked first;
  * DELETE does not check that a directory is empty;
  * an open-ended Range past the end returns the whole file, so ranges are clamped.

Capabilities are secrets: exception messages and reprs carry at most a short prefix.
"""

from __future__ import annotations

import io
import re
import tempfile
import threading
from typing import Any, BinaryIO, Callable, Collection, Iterator, Mapping, cast
from urllib.parse import quote, unquote, urlencode

import orjson
import requests
from fs import errors
from fs.base import FS
from fs.info import Info
from fs.iotools import RawWrapper
from fs.mode import Mode
from fs.opener import Opener
from fs.opener.errors import OpenerError
from fs.opener.parse import ParseResult
from fs.path import basename, dirname, join
from fs.subfs import SubFS

from archiver.common.redaction import redact
from archiver.store.base import (
    Freezing, GridStatus, GuardedReader, HasCaps, Health, HealthCheck, LeaseRenewal, NotFound, Stored,
    sha256_identity,
)
from archiver.store.fs import FsStore

DEFAULT_TIMEOUT = (5.0, 3600.0)  # connect fast; an upload is answered only once on the grid
CHUNK = 1024 * 1024
_READ_ONLY_KINDS = ("-RO:", "-CHK:", "URI:CHK:", "URI:LIT:", "-Verifier:")
_HAPPY = re.compile(r"at least (\d+) such servers")
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception): ", re.M)  # a traceback's last line: "pkg.SomeError: message"


def is_read_only_cap(cap: str) -> bool:
    return any(kind in cap for kind in _READ_ONLY_KINDS)


class TahoeError(errors.OperationFailed):
    """A Tahoe-specific failure; the message says what to do about it."""

    default_message = "tahoe operation on {path!r} failed: {msg}"


class NotEnoughShares(TahoeError):
    """410: too few shares reachable to read the file (servers down or shares lost)."""


class UploadUnhappy(TahoeError):
    """Fewer storage servers connected than shares.happy: the upload was refused."""


class DirectoryImmutable(TahoeError):
    """A write into an immutable directory (a frozen one) was refused."""


class TahoeFS(FS):
    """A pyFilesystem2 FS rooted at a Tahoe directory capability."""

    def __init__(
        self,
        node_url: str,
        root_cap: str,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__()
        if not root_cap.startswith("URI:DIR2"):
            raise errors.CreateFailed(f"not a Tahoe directory capability: {redact(root_cap)}")
        self.node_url = node_url.rstrip("/")
        self._root_cap = root_cap
        self._timeout = timeout
        self._session = session or _new_session()
        self._read_only = is_read_only_cap(root_cap)
        self._meta = {
            "case_insensitive": False,
            "invalid_path_chars": "\0",
            "max_path_length": None,
            "max_sys_path_length": None,
            "network": True,
            "read_only": self._read_only,
            "supports_rename": True,
            "thread_safe": True,
            "unicode_paths": True,
            "virtual": False,
        }

    def __repr__(self) -> str:
        return f"TahoeFS({self.node_url!r}, {redact(self._root_cap)!r})"

    def __str__(self) -> str:
        return f"<tahoefs '{self.node_url}'>"

    @property
    def root_cap(self) -> str:
        return self._root_cap

    # -- HTTP plumbing ---------------------------------------------------------------------

    def _url(self, path: str, **params: str) -> str:
        parts = [quote(part, safe="") for part in path.split("/") if part]
        url = "/".join([self.node_url, "uri", self._root_cap, *parts])
        return f"{url}?{urlencode(params)}" if params else url

    def _request(self, method: str, url: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self._session.request(method, url, timeout=self._timeout, **kwargs)
        except requests.Timeout:
            raise errors.OperationTimeout(path, msg=f"the Tahoe node at {self.node_url} timed out") from None
        except requests.RequestException as err:
            raise errors.RemoteConnectionError(
                msg=f"cannot reach the Tahoe node at {self.node_url}: {type(err).__name__}"
            ) from None

    def _check(self, response: requests.Response, path: str, conflict: type[Exception] = errors.DestinationExists) -> requests.Response:
        status = response.status_code
        if status < 400:
            return response
        text = redact(_error_text(response))
        if status == 404 or (status == 400 and "have no children named" in text):
            raise errors.ResourceNotFound(path)  # a missing name, or a path through a file
        if status == 409:
            raise conflict(path)
        if status == 410:
            raise NotEnoughShares(path, msg=f"not enough shares reachable to read it ({text}): storage servers are down or lost shares")
        if "UploadUnhappinessError" in text or "NoServersError" in text:
            raise UploadUnhappy(path, msg=self._unhappy_message(text))
        if "NotWriteableError" in text:
            raise DirectoryImmutable(path, msg="its directory is immutable")
        raise TahoeError(path, msg=f"the node answered {status}: {text}")

    def _unhappy_message(self, text: str) -> str:
        match = _HAPPY.search(text)
        happy = match.group(1) if match else "?"
        connected = self.servers_connected()
        return (
            f"upload refused: {connected} storage server(s) connected, shares.happy is {happy}; "
            f"start more storage nodes or lower shares.happy ({text[-300:]})"
        )

    def servers_connected(self) -> int | None:
        """Storage servers the gateway node sees connected now (None if it cannot say)."""
        return servers_connected(self.node_url, self._session)

    def _json(self, path: str, shown: str) -> list[Any]:
        """``t=json`` of a path; errors name ``shown``, the path as the caller wrote it."""
        response = self._check(self._request("GET", self._url(path, t="json"), shown), shown)
        document = response.json()
        if document[0] not in ("dirnode", "filenode"):
            raise errors.ResourceNotFound(shown)
        return document

    def _node(self, path: str, shown: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """(kind, node JSON, link metadata) of a path, from one request to its parent."""
        if path in ("", "/"):
            kind, data = self._json("/", shown)
            return kind, data, {}
        parent = self._json(dirname(path), shown)
        if parent[0] != "dirnode":
            raise errors.ResourceNotFound(shown)
        child = parent[1]["children"].get(basename(path))
        if child is None:
            raise errors.ResourceNotFound(shown)
        kind, data = child
        return kind, data, data.get("metadata", {})

    def _kind(self, path: str, shown: str) -> str | None:
        """"dirnode", "filenode" or None (missing), from the node's read-only cap: one small
        answer, where a t=json of the parent would list every sibling."""
        try:
            response = self._check(self._request("GET", self._url(path, t="readonly-uri"), shown), shown)
        except errors.ResourceNotFound:
            return None
        return "dirnode" if response.text.startswith("URI:DIR2") else "filenode"

    def exists(self, path: str) -> bool:
        return self._kind(self.validatepath(path), path) is not None

    def isdir(self, path: str) -> bool:
        return self._kind(self.validatepath(path), path) == "dirnode"

    def isfile(self, path: str) -> bool:
        return self._kind(self.validatepath(path), path) == "filenode"

    def _require_writable(self, path: str) -> None:
        if self._read_only:
            raise errors.ResourceReadOnly(path)

    def _require_parent_dir(self, path: str, shown: str) -> None:
        parent = dirname(path)
        if parent not in ("", "/") and self._kind(parent, shown) != "dirnode":
            raise errors.ResourceNotFound(shown)

    # -- pyFilesystem2 abstract methods ----------------------------------------------------

    def getinfo(self, path: str, namespaces: Collection[str] | None = None) -> Info:
        _path = self.validatepath(path)
        kind, data, metadata = self._node(_path, path)
        return _info(basename(_path), kind, data, metadata, namespaces or ())

    def listdir(self, path: str) -> list[str]:
        return [info.name for info in self.scandir(path)]

    def scandir(
        self, path: str, namespaces: Collection[str] | None = None, page: tuple[int, int] | None = None
    ) -> Iterator[Info]:
        _path = self.validatepath(path)
        kind, data = self._json(_path, path)
        if kind != "dirnode":
            raise errors.DirectoryExpected(path)
        children = sorted(data["children"].items())
        if page is not None:
            children = children[page[0] : page[1]]
        return iter(
            [_info(name, child[0], child[1], child[1].get("metadata", {}), namespaces or ()) for name, child in children]
        )

    def makedir(self, path: str, permissions: Any = None, recreate: bool = False) -> SubFS[FS]:
        _path = self.validatepath(path)
        self._require_writable(path)
        if _path == "/":
            if recreate:
                return self.opendir(path)
            raise errors.DirectoryExists(path)
        with self._lock:
            self._require_parent_dir(_path, path)
            url = self._url(dirname(_path), t="mkdir", name=basename(_path), replace="false")
            response = self._request("POST", url, path)
            if response.status_code == 409:
                if recreate and self.isdir(_path):
                    return self.opendir(path)
                raise errors.DirectoryExists(path)
            self._check(response, path)
        return self.opendir(path)

    def makedirs(self, path: str, permissions: Any = None, recreate: bool = False) -> SubFS[FS]:
        """One path-form mkdir: creates every missing parent and is idempotent in Tahoe."""
        _path = self.validatepath(path)
        self._require_writable(path)
        if not recreate and self.exists(_path):
            raise errors.DirectoryExists(path)
        if _path != "/":
            response = self._request("POST", self._url(_path, t="mkdir"), path)
            if response.status_code in (400, 409):  # a file is in the way
                raise errors.DirectoryExpected(path)
            self._check(response, path)
        return self.opendir(path)

    def openbin(self, path: str, mode: str = "r", buffering: int = -1, **options: Any) -> BinaryIO:
        _mode = Mode(mode)
        _mode.validate_bin()
        _path = self.validatepath(path)
        if _mode.writing:
            self._require_writable(path)
        with self._lock:
            try:
                kind, data = self._json(_path, path)  # the node itself: no listing of its siblings
            except errors.ResourceNotFound:
                if not _mode.create:
                    raise
                self._require_parent_dir(_path, path)
                kind, data = "", {}
            if kind == "dirnode":
                raise errors.FileExpected(path)
            exists = kind == "filenode"
            if exists and _mode.exclusive:
                raise errors.FileExists(path)
            if not _mode.writing:
                reader = _RangeReader(self, self._url(_path), _path, data.get("size") or 0)
                return RawWrapper(io.BufferedReader(reader, CHUNK), mode=_mode.to_platform_bin(), name=_path)  # type: ignore[return-value]
            spool = cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=8 * CHUNK, mode="w+b"))
            if exists and not _mode.truncate:
                self.download(_path, spool)
                if not _mode.appending:
                    spool.seek(0)
            return _UploadOnClose(self, _path, _mode, spool, options)  # type: ignore[return-value]

    def remove(self, path: str) -> None:
        _path = self.validatepath(path)
        self._require_writable(path)
        if self.getinfo(path).is_dir:
            raise errors.FileExpected(path)
        self._check(self._request("DELETE", self._url(_path), path), path)

    def removedir(self, path: str) -> None:
        _path = self.validatepath(path)
        if _path == "/":
            raise errors.RemoveRootError(path)
        self._require_writable(path)
        if self.listdir(_path):  # Tahoe's DELETE would unlink a full directory
            raise errors.DirectoryNotEmpty(path)
        self._check(self._request("DELETE", self._url(_path), path), path)

    def removetree(self, dir_path: str) -> None:
        _path = self.validatepath(dir_path)
        self._require_writable(dir_path)
        if _path == "/":
            for name in self.listdir("/"):
                self._check(self._request("DELETE", self._url(name), name), name)
            return
        if not self.getinfo(dir_path).is_dir:
            raise errors.DirectoryExpected(dir_path)
        self._check(self._request("DELETE", self._url(_path), dir_path), dir_path)

    def setinfo(self, path: str, info: Mapping[str, Any]) -> None:
        """Tahoe keeps its own link times and nothing else settable: only existence is checked."""
        self.getinfo(path)

    # -- efficient overrides ---------------------------------------------------------------

    def upload(self, path: str, file: BinaryIO, chunk_size: int | None = None, **options: Any) -> None:
        """Streaming PUT (chunked when the size is unknown). ``format="MDMF"`` for a mutable file."""
        self._upload(path, file, options)

    def upload_with_caps(self, path: str, file: BinaryIO, parent_cap: str | None = None) -> dict[str, Any]:
        """``upload``, then the new file's ``tahoe`` info (caps) from the cap the PUT answered:
        one small request whatever the size of its directory, where ``getinfo`` lists it whole.

        ``parent_cap``, the write cap of the file's directory (the uploader keeps one for every
        directory it made), sends the PUT to that directory itself: the gateway then reads one
        directory instead of each on the path from the root, and a cap needs no parent check."""
        if parent_cap is None:
            cap = self._upload(path, file, {})
        else:
            self._require_writable(path)
            directory = f"{self.node_url}/uri/{quote(parent_cap, safe='')}"
            cap = self._put(f"{directory}/{quote(basename(path), safe='')}?format=CHK", path, file)
        return self._caps_of_cap(cap, path)

    def _cap_json(self, cap: str, shown: str) -> tuple[str, dict[str, Any]]:
        response = self._check(self._request("GET", f"{self.node_url}/uri/{quote(cap, safe='')}?t=json", shown), shown)
        kind, data = response.json()
        return kind, data

    def _caps_of_cap(self, cap: str, shown: str) -> dict[str, Any]:
        """The ``tahoe`` info (caps, mutable) of the object ``cap`` names."""
        kind, data = self._cap_json(cap, shown)
        return dict(_info(basename(shown), kind, data, {}, ["tahoe"]).raw["tahoe"])

    def freeze_dir(self, path: str, holds: Collection[str] = ()) -> dict[str, Any]:
        """Link an immutable directory (``t=mkdir-immutable``) holding the children of the
        mutable directory at ``path`` in its place; its ``tahoe`` info. Already immutable: as
        it is. A child added to the mutable directory while this ran (another writer) puts the
        mutable one back, and the freeze fails: the next try takes the newcomer along. A name
        of ``holds`` missing from the children read (an older version of the directory, read
        from a degraded grid) fails it before anything is linked."""
        _path, data = self._dir_to_replace(path)
        if not data.get("mutable", True):
            return self._caps_of_cap(data["ro_uri"], path)
        absent = sorted(set(holds) - set(data["children"]))
        if absent:
            raise TahoeError(path, msg=f"{len(absent)} file(s) put there are not in the listing read ({absent[0]}): left mutable")
        mutable = sorted(name for name, (_, child) in data["children"].items() if child.get("mutable"))
        if mutable:
            raise TahoeError(path, msg=f"{len(mutable)} mutable child(ren) cannot go in an immutable directory ({mutable[0]})")
        with self._lock:
            cap = self._make_dir("mkdir-immutable", data, path)
            self._link(_path, cap, path)
            if set(self._cap_json(data["rw_uri"], path)[1]["children"]) != set(data["children"]):
                self._link(_path, data["rw_uri"], path)
                raise TahoeError(path, msg="the directory changed while it was being frozen: left mutable")
        return self._caps_of_cap(cap, path)

    def thaw_dir(self, path: str) -> dict[str, Any]:
        """Link a mutable directory (``t=mkdir-with-children``) holding the children of the
        immutable directory at ``path`` in its place; its ``tahoe`` info. Already mutable: as
        it is."""
        _path, data = self._dir_to_replace(path)
        if data.get("mutable", True):
            return self._caps_of_cap(data["rw_uri"], path)
        with self._lock:
            cap = self._make_dir("mkdir-with-children", data, path)
            self._link(_path, cap, path)
        return self._caps_of_cap(cap, path)

    def _dir_to_replace(self, path: str) -> tuple[str, dict[str, Any]]:
        _path = self.validatepath(path)
        self._require_writable(path)
        if _path == "/":
            raise errors.ResourceReadOnly(path, msg="the root directory cannot be replaced")
        kind, data = self._json(_path, path)
        if kind != "dirnode":
            raise errors.DirectoryExpected(path)
        return _path, data

    def _make_dir(self, operation: str, listing: Mapping[str, Any], path: str) -> str:
        """A new directory (``POST /uri?t=<operation>``) holding the children of ``listing`` by
        their read caps: its cap."""
        children = {
            name: [kind, {"ro_uri": child["ro_uri"], "metadata": child.get("metadata", {})}]
            for name, (kind, child) in listing["children"].items()
        }
        url = f"{self.node_url}/uri?t={operation}"
        return self._check(self._request("POST", url, path, data=orjson.dumps(children)), path).text.strip()

    def _link(self, _path: str, cap: str, shown: str) -> None:
        """Link ``cap`` at ``_path``, replacing what is there."""
        self._check(self._request("PUT", self._url(_path, t="uri", replace="true"), shown, data=cap), shown)

    def _upload(self, path: str, file: BinaryIO, options: Mapping[str, Any]) -> str:
        _path = self.validatepath(path)
        self._require_writable(path)
        with self._lock:
            self._require_parent_dir(_path, path)
            return self._put(self._file_url(_path, options), path, file)

    def _file_url(self, path: str, options: Mapping[str, Any]) -> str:
        """The PUT URL of a file at ``path``: immutable (CHK) unless ``options`` name a format."""
        return self._url(path, format=str(options.get("format", "CHK")))

    def _put(self, url: str, path: str, data: Any) -> str:
        response = self._request("PUT", url, path, data=data)
        if response.status_code == 400 and "PUT to a directory" in response.text:
            raise errors.FileExpected(path)
        return self._check(response, path).text.strip()

    def download(self, path: str, file: BinaryIO, chunk_size: int | None = None, **options: Any) -> None:
        _path = self.validatepath(path)
        response = self._check(self._request("GET", self._url(_path), path, stream=True), path)
        with response:
            if response.headers.get("Content-Type", "").startswith("text/html") and self.getinfo(_path).is_dir:
                raise errors.FileExpected(path)
            for chunk in response.iter_content(chunk_size or CHUNK):
                file.write(chunk)

    def copy(self, src_path: str, dst_path: str, overwrite: bool = False, preserve_time: bool = False) -> None:
        """Immutable files are copied by linking their cap: no bytes move."""
        _src, _dst = self.validatepath(src_path), self.validatepath(dst_path)
        self._require_writable(dst_path)
        with self._lock:
            kind, data, _ = self._node(_src, src_path)
            if kind != "filenode":
                raise errors.FileExpected(src_path)
            if not overwrite and self.exists(_dst):
                raise errors.DestinationExists(dst_path)
            self._require_parent_dir(_dst, dst_path)
            if data.get("mutable"):
                with self.openbin(_src) as source:
                    self._put(self._file_url(_dst, {"format": data.get("format", "MDMF")}), dst_path, source)
                return
            url = self._url(_dst, t="uri", replace="true")
            self._check(self._request("PUT", url, dst_path, data=data["ro_uri"]), dst_path)

    def move(self, src_path: str, dst_path: str, overwrite: bool = False, preserve_time: bool = False) -> None:
        """A relink: the same file object under a new name, no bytes move."""
        _src, _dst = self.validatepath(src_path), self.validatepath(dst_path)
        self._require_writable(dst_path)
        with self._lock:
            if self._node(_src, src_path)[0] != "filenode":
                raise errors.FileExpected(src_path)
            if not overwrite and self.exists(_dst):
                raise errors.DestinationExists(dst_path)
            self._require_parent_dir(_dst, dst_path)
            to_dir = "/".join([self._root_cap, *[quote(p, safe="") for p in dirname(_dst).split("/") if p]])
            url = self._url(
                dirname(_src), t="relink", from_name=basename(_src), to_dir=to_dir, to_name=basename(_dst),
                replace="true",
            )
            self._check(self._request("POST", url, src_path), src_path)

    def open_cap(self, cap: str, size: int, name: str = "") -> BinaryIO:
        """Read an immutable file by its read cap (``/uri/CAP``): no directory is traversed,
        which is how a reader holding the manifest fetches segments."""
        if not cap.startswith(("URI:CHK:", "URI:LIT:", "URI:MDMF-RO:", "URI:SSK-RO:")):
            raise errors.ResourceNotFound(name or redact(cap))
        reader = _RangeReader(self, f"{self.node_url}/uri/{quote(cap, safe=':')}", name or redact(cap), size)
        return RawWrapper(io.BufferedReader(reader, CHUNK), mode="rb", name=name)  # type: ignore[return-value]

    def check_health(
        self, path: str, *, verify: bool = True, repair: bool = False, add_lease: bool = False
    ) -> dict[str, Any]:
        """Tahoe's ``t=check`` of a file or directory (``verify`` reads every share back;
        ``repair`` re-uploads missing shares; ``add_lease`` renews the leases on every share
        found): the node's JSON answer."""
        _path = self.validatepath(path)
        params = {"t": "check", "output": "JSON"}
        for name, wanted in (("verify", verify), ("repair", repair), ("add-lease", add_lease)):
            if wanted:
                params[name] = "true"
        response = self._check(self._request("POST", self._url(_path, **params), path), path)
        result: dict[str, Any] = response.json()
        return result

    def add_lease_by_cap(self, cap: str, shown: str) -> dict[str, Any]:
        """``t=check&add-lease=true`` on ``/uri/CAP``: renews the leases on every share of one
        object, found by its read cap (no directory walk, no write cap; the web API refuses a
        check by verify cap)."""
        url = f"{self.node_url}/uri/{quote(cap, safe=':')}?{urlencode({'t': 'check', 'add-lease': 'true', 'output': 'JSON'})}"
        result: dict[str, Any] = self._check(self._request("POST", url, shown), shown).json()
        return result

    def add_leases_deep(self, path: str) -> Iterator[dict[str, Any]]:
        """``t=stream-deep-check&add-lease=true`` from a directory: every object reachable from
        it gets its leases renewed; one parsed JSON line per object as the node reports it."""
        _path = self.validatepath(path)
        url = self._url(_path, t="stream-deep-check", **{"add-lease": "true"})
        response = self._check(self._request("POST", url, path, stream=True), path)
        with response:
            for line in response.iter_lines():
                if line.startswith(b"ERROR:"):
                    raise errors.OperationFailed(path, msg=redact(line.decode(errors="replace")))
                if line.strip():
                    yield orjson.loads(line)

    def close(self) -> None:
        if not self.isclosed():
            self._session.close()
        super().close()

    def geturl(self, path: str, purpose: str = "download") -> str:
        """The tahoe:// URL of a path; it embeds the root cap, so treat it as a secret."""
        _path = self.validatepath(path)
        if purpose == "fs":
            host = self.node_url.split("://", 1)[1]
            return f"tahoe://{host}/{self._root_cap}{quote(_path) if _path != '/' else ''}"
        if purpose == "download":
            return self._url(_path)
        raise errors.NoURL(path, purpose)

    def hassyspath(self, path: str) -> bool:
        return False


class _RangeReader(io.RawIOBase):
    """Sequential reads stream one GET; a seek starts a new, clamped Range request."""

    def __init__(self, tahoe: TahoeFS, url: str, path: str, size: int) -> None:
        super().__init__()
        self._fs = tahoe
        self._url = url
        self._path = path
        self._size = size
        self._pos = 0
        self._response: requests.Response | None = None
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._pos + offset
        elif whence == io.SEEK_END:
            position = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if position < 0:
            raise ValueError("negative seek position")
        if position != self._pos:
            self._drop()
            self._pos = position
        return self._pos

    def readinto(self, buffer: Any) -> int:
        with self._lock:
            if self._pos >= self._size or len(buffer) == 0:
                return 0
            if self._response is None:
                # Never open-ended: Tahoe answers a range starting past the end with the whole file.
                headers = {"Range": f"bytes={self._pos}-{self._size - 1}"} if self._pos else {}
                response = self._fs._request("GET", self._url, self._path, headers=headers, stream=True)
                self._response = self._fs._check(response, self._path)
            data = self._response.raw.read(len(buffer))
            if not data:
                raise errors.OperationFailed(self._path, msg="the Tahoe node ended the download early")
            buffer[: len(data)] = data
            self._pos += len(data)
            return len(data)

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def close(self) -> None:
        self._drop()
        super().close()


class _UploadOnClose(RawWrapper):
    """A file being written: spooled locally (memory, then disk), uploaded whole on close,
    since Tahoe files are written in one piece."""

    def __init__(self, tahoe: TahoeFS, path: str, mode: Mode, spool: Any, options: Mapping[str, Any]) -> None:
        super().__init__(spool, mode=mode.to_platform_bin(), name=path)
        self._fs = tahoe
        self._path = path
        self._options = options
        self._mode = mode

    def readable(self) -> bool:
        return self._mode.reading

    def truncate(self, size: int | None = None) -> int:
        """Like a real file: growing pads with zero bytes (an in-memory spool would not)."""
        position = self._f.tell()
        size = position if size is None else size
        end = self._f.seek(0, io.SEEK_END)
        if size > end:
            self._f.write(b"\0" * (size - end))
        else:
            self._f.truncate(size)
        self._f.seek(position)
        return size

    def read(self, n: int = -1) -> bytes:
        if not self._mode.reading:
            raise io.UnsupportedOperation(f"{self._path} is open for writing only")
        return super().read(n)

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._f.flush()
            self._f.seek(0)
            self._fs._put(self._fs._file_url(self._path, self._options), self._path, _Chunks(self._f))
        finally:
            super().close()


class _Chunks:
    """An iterable over a spool file: requests sends it chunked instead of reading it whole."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._handle.read(CHUNK):
            yield chunk


class _BigBlockAdapter(requests.adapters.HTTPAdapter):
    """Streams request bodies in 1 MiB writes instead of urllib3's 16 KiB."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["blocksize"] = CHUNK
        super().init_poolmanager(*args, **kwargs)


def _new_session() -> requests.Session:
    session = requests.Session()
    adapter = _BigBlockAdapter(pool_connections=4, pool_maxsize=16)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["Accept"] = "text/plain, application/json"
    return session


def _error_text(response: requests.Response) -> str:
    try:
        text = response.text
    except requests.RequestException:  # a streamed 410 comes labelled gzip but is not: no text to show
        return f"HTTP {response.status_code}"
    if "<html" in text[:200].lower():
        parts = re.findall(r"<(?:h1|p)>(.*?)</(?:h1|p)>", text, flags=re.S)
        text = " ".join(p.strip() for p in parts if p.strip() and p.strip() != "Error")
    raised = list(_RAISED.finditer(text))
    if raised:  # a traceback: its exception's message may run over several lines
        return " ".join(text[raised[-1].start() :].split())[:500]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else f"HTTP {response.status_code}"


def _info(name: str, kind: str, data: Mapping[str, Any], metadata: Mapping[str, Any], namespaces: Collection[str]) -> Info:
    is_dir = kind == "dirnode"
    raw: dict[str, Any] = {"basic": {"name": name, "is_dir": is_dir}}
    if "details" in namespaces:
        times = metadata.get("tahoe", {})
        raw["details"] = {
            "type": 1 if is_dir else 2,  # ResourceType.directory / ResourceType.file
            "size": 0 if is_dir else data.get("size") or 0,
            "modified": times.get("linkmotime"),
            "created": times.get("linkcrtime"),
            "accessed": None,
            "_write": [],
        }
    if "tahoe" in namespaces:
        raw["tahoe"] = {
            "read_cap": data.get("ro_uri"),
            "write_cap": data.get("rw_uri"),
            "verify_cap": data.get("verify_uri"),
            "mutable": bool(data.get("mutable", is_dir)),
            "format": data.get("format", "SDMF" if is_dir else None),
        }
    return Info(raw)


def split_tahoe_url(url: str) -> tuple[str, str | None, str]:
    """``tahoe://HOST:PORT[/CAP[/sub/path]]`` -> (node URL, cap or None, sub path)."""
    if not url.startswith("tahoe://"):
        raise ValueError("not a tahoe:// URL")
    host, _, rest = url[len("tahoe://"):].partition("/")
    rest, _, query = rest.partition("?")
    scheme = "https" if query in ("tls=1", "tls=true", "tls=yes") else "http"
    if not host:
        raise ValueError("a tahoe:// URL needs HOST:PORT")
    if not rest:
        return f"{scheme}://{host}", None, ""
    if not rest.startswith("URI:"):
        raise ValueError("expected tahoe://HOST:PORT/URI:DIR2:...[/path]: a node and a directory capability")
    cap, _, sub = rest.partition("/")
    return f"{scheme}://{host}", cap, unquote(sub)


def servers_connected(node_url: str, session: requests.Session | None = None) -> int | None:
    """Storage servers the node at ``node_url`` sees connected now (None if it cannot say)."""
    try:
        get = session.get if session is not None else requests.get
        welcome = get(f"{node_url}/?t=json", timeout=(2.0, 5.0)).json()
    except (requests.RequestException, ValueError):
        return None
    return sum(1 for s in welcome.get("servers", []) if str(s.get("connection_status", "")).lower().startswith("connected"))


def create_root(node_url: str, timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> TahoeFS:
    """A new, empty directory on the grid (POST /uri?t=mkdir), as a TahoeFS at its write cap."""
    session = _new_session()
    try:
        response = session.post(f"{node_url}/uri?t=mkdir", timeout=timeout)
    except requests.RequestException as err:
        session.close()
        raise errors.RemoteConnectionError(msg=f"cannot reach the Tahoe node at {node_url}: {type(err).__name__}") from None
    if response.status_code != 200:
        session.close()
        raise TahoeError("/", msg=f"creating a root directory failed: {redact(_error_text(response))}")
    return TahoeFS(node_url, response.text.strip(), timeout=timeout, session=session)


class TahoeOpener(Opener):
    """``tahoe://HOST:PORT/URI:DIR2:...[/sub/path]``: the FS at that path under that cap.

    Registered through the ``fs.opener`` entry point, so ``fs.open_fs`` understands it in any
    program once archiver is installed. The cap never goes before an ``@``.
    """

    protocols = ["tahoe"]

    def open_fs(self, fs_url: str, parse_result: ParseResult, writeable: bool, create: bool, cwd: str) -> FS:
        try:
            node_url, cap, sub = split_tahoe_url(fs_url)
        except ValueError as err:
            raise OpenerError(str(err)) from None
        if cap is None:
            raise OpenerError("expected tahoe://HOST:PORT/URI:DIR2:...[/path]: a node and a directory capability")
        tahoe = TahoeFS(node_url, cap)
        try:
            tahoe.getinfo("/")  # fail now, not at first use, on a bad cap or an unreachable node
        except errors.FSError as err:
            tahoe.close()
            raise errors.CreateFailed(f"cannot open {redact(fs_url)}: {err}") from None
        if not sub:
            return tahoe
        sub_path = join("/", sub)
        if create:
            tahoe.makedirs(sub_path, recreate=True)
        return tahoe.opendir(sub_path, factory=_ClosingSubFS)


class _ClosingSubFS(SubFS[FS]):
    """A SubFS that closes its parent TahoeFS (and its connection pool) when closed."""

    def close(self) -> None:
        self._wrap_fs.close()
        super().close()


class TahoeStore(FsStore, HasCaps, HealthCheck, LeaseRenewal, GridStatus, Freezing):
    """The Store protocol over a TahoeFS: files are put into their directory by its cap and
    come back with theirs, read by cap, checked, repaired and leased by the grid; closed
    directories are frozen."""

    UNAVAILABLE = (*FsStore.UNAVAILABLE, UploadUnhappy, NotEnoughShares)
    FROZEN = (DirectoryImmutable,)

    def __init__(self, tahoe: TahoeFS) -> None:
        super().__init__(tahoe)
        self.tahoe = tahoe

    @property
    def url(self) -> str:
        return "tahoe://" + self.tahoe.node_url.split("://", 1)[1]

    @property
    def location(self) -> str:
        return self.url

    def put(self, path: str, file: BinaryIO, parent: str | None = None) -> Stored:
        """A PUT into ``parent`` (the directory's write cap) when given: 410 there means that
        cap is not one this grid can read (another root or grid), reported as NotFound so the
        caller makes the directory again by path; without ``parent``, the grid is down."""
        with self.mapped(path):
            try:
                return _stored(self.tahoe.upload_with_caps(path, file, parent))
            except NotEnoughShares:
                if parent is None:
                    raise
                raise NotFound(f"the directory of {path} cannot be read by the cap known for it") from None

    def freeze(self, path: str, holds: Collection[str] = ()) -> Stored:
        with self.mapped(path):
            return _stored(self.tahoe.freeze_dir(path, holds))

    def thaw(self, path: str) -> Stored:
        with self.mapped(path):
            return _stored(self.tahoe.thaw_dir(path))

    def caps(self, path: str) -> Stored:
        with self.mapped(path):
            return _stored(self.tahoe.getinfo(path, namespaces=["tahoe"]).raw["tahoe"])

    def open_cap(self, cap: str, size: int, name: str = "") -> BinaryIO:
        shown = name or redact(cap)
        with self.mapped(shown):
            raw = self.tahoe.open_cap(cap, size, name)
        return GuardedReader(raw, self.mapped, shown)  # type: ignore[return-value]

    def check(self, path: str, *, verify: bool = True, repair: bool = False) -> Health:
        with self.mapped(path):
            return parse_check(self.tahoe.check_health(path, verify=verify, repair=repair))

    def renew_lease(self, path: str) -> Health:
        with self.mapped(path):
            return parse_check(self.tahoe.check_health(path, verify=False, add_lease=True))

    def renew_lease_cap(self, cap: str, name: str = "") -> Health:
        shown = name or redact(cap)
        with self.mapped(shown):
            return parse_check(self.tahoe.add_lease_by_cap(cap, shown))

    def renew_leases_deep(self, path: str = "/") -> Iterator[str]:
        with self.mapped(path):
            for found in self.tahoe.add_leases_deep(path):
                yield "/" + "/".join(found.get("path") or [])

    def servers_connected(self) -> int | None:
        return self.tahoe.servers_connected()

    def root_identity(self) -> str:
        return sha256_identity(self.caps("/").read_cap or self.tahoe.root_cap)

    def under(self, sub: str, create: bool) -> "TahoeStore":
        """The store rooted at the directory ``sub`` (made first when ``create``), by its own
        cap: uploads into it keep their caps, as at a root."""
        if create:
            self.makedirs(sub)
        caps = self.caps(sub)
        cap = caps.write_cap or caps.read_cap
        if not self.isdir(sub) or cap is None:
            raise NotFound(f"{sub} is not a directory in the store")
        return TahoeStore(TahoeFS(self.tahoe.node_url, cap, session=self.tahoe._session))


def _stored(tahoe: Mapping[str, Any]) -> Stored:
    return Stored(read_cap=tahoe.get("read_cap"), write_cap=tahoe.get("write_cap"), verify_cap=tahoe.get("verify_cap"))


def parse_check(answer: Mapping[str, Any]) -> Health:
    """A ``t=check&output=JSON`` answer, after repair when one was made."""
    results = answer.get("post-repair-results", answer)["results"]
    return Health(
        healthy=bool(results.get("healthy")),
        happiness=results.get("count-happiness"),
        shares_good=results.get("count-shares-good"),
        shares_expected=results.get("count-shares-expected"),
        repaired=answer.get("repair-successful"),
        summary=str(results.get("summary") or ""),
    )


def public_url(url: str) -> str:
    """A tahoe:// URL without its capability (or query)."""
    return "tahoe://" + split_tahoe_url(url)[0].split("://", 1)[1]


def names_root(url: str) -> bool:
    """Whether a tahoe:// URL names its root by a cap (else the root is created, or kept aside)."""
    return split_tahoe_url(url)[1] is not None


def open_tahoe(
    url: str, *, root_cap: str | None = None, make_root: bool = False,
    on_root: Callable[[Stored], None] = lambda caps: None,
) -> TahoeStore:
    """The store at ``tahoe://HOST:PORT[/CAP[/sub]]``. Without a cap in the URL, ``root_cap``
    (kept from an earlier start) roots it, else with ``make_root`` a new root directory is made;
    ``on_root`` hears its caps, first the write cap of a new root (before anything else can
    fail), then the root's caps once read. The root is read at once: a bad cap or a node that
    is down fails here."""
    node_url, cap, sub = split_tahoe_url(url)
    cap = cap or root_cap
    if cap:
        tahoe = TahoeFS(node_url, cap)
    elif not make_root:
        raise ValueError("expected tahoe://HOST:PORT/URI:DIR2:...[/path]: a node and a directory capability")
    else:
        tahoe = create_root(node_url)
        on_root(Stored(write_cap=tahoe.root_cap))
    store = TahoeStore(tahoe)
    try:
        on_root(store.caps("/"))
        return store.under(sub, create=not tahoe.getmeta()["read_only"]) if sub else store
    except Exception:
        store.close()
        raise
