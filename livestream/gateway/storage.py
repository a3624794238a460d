"""The gateway's media store: files kept for a TTL, served at `/stream/{id}/{name}`, and the
records of async jobs (`/image-to-video/result`).

Two stores, one interface (`MediaStore`):

- `LocalStore` (the default): a folder (`storage_dir`, else a temporary one). go-livepeer's
  default store is in memory with relative URLs; ours writes to a folder (videos can be large)
  and answers with absolute URLs (`public_url`, else the request's own scheme and host). Each
  file lives in `{id}/{name}` with its content type in `{id}/.type`; its age is its file's
  modification time, so a gateway restarted on the same `storage_dir` still serves what is
  younger than the TTL. Job records are `jobs.d/{request_id}.json`.
- `S3Store` (`object_store`, as go-livepeer's `-objectStore`): any S3-API object store through
  boto3 (the AWS SDK), media under `{prefix}media/{id}/{name}`, job records under
  `{prefix}jobs/{request_id}.json`; the age is the object's LastModified. The gateway still
  serves the files at its own `/stream/...` URLs (so the bucket may stay private); the sweeper
  deletes what is older than the TTL (a bucket lifecycle rule may do it instead).

boto3 is synchronous: its calls run in worker threads (`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

__all__ = ["LocalStore", "MediaStore", "S3Location", "S3Store", "StoredFile", "open_store", "parse_object_store"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Ids are `secrets.token_urlsafe` (no dot), so `jobs.d` never is one.
_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_JOBS = "jobs.d"


@dataclass(frozen=True)
class StoredFile:
    content_type: str
    #: A local file (served as it is), or
    path: Path | None = None
    #: its bytes (from an object store).
    data: bytes | None = None


def _split_key(key: str) -> tuple[str, str] | None:
    file_id, _, name = key.partition("/")
    return (file_id, name) if _ID.match(file_id) and _NAME.match(name) else None


class MediaStore(Protocol):
    ttl: float

    async def put(self, name: str, data: bytes, content_type: str) -> str:
        """Store `data`; returns its key `{id}/{name}` (the id is random and unguessable)."""

    async def get(self, key: str) -> StoredFile | None:
        """The file of a key, or None (unknown, malformed or expired)."""

    async def put_record(self, request_id: str, record: dict[str, Any]) -> None:
        """Write (or overwrite) an async job's record; its TTL starts again."""

    async def get_record(self, request_id: str) -> dict[str, Any] | None:
        """An async job's record, or None (unknown or expired)."""

    async def sweep(self) -> int:
        """Delete what is older than the TTL; returns how many."""

    def running(self, interval: float = 30.0) -> contextlib.AbstractAsyncContextManager[MediaStore]:
        """The store with its sweeper running."""


class _Sweeping:
    ttl: float

    async def sweep(self) -> int:
        raise NotImplementedError

    async def close(self) -> None:
        pass

    @contextlib.asynccontextmanager
    async def running(self, interval: float = 30.0) -> AsyncIterator[Any]:
        async def sweeper() -> None:
            while True:
                await asyncio.sleep(min(interval, max(self.ttl, 0.05)))
                try:
                    await self.sweep()
                except Exception:  # an object store that is down must not end the sweeper
                    log.exception("sweeping the media store failed")

        task = asyncio.create_task(sweeper(), name="gateway-store-sweeper")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.close()


class LocalStore(_Sweeping):
    def __init__(self, root: Path | None, ttl: float) -> None:
        self._owned = root is None
        self.root = Path(tempfile.mkdtemp(prefix="livestream-gateway-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl = ttl

    def _fresh(self, path: Path) -> bool:
        try:
            return path.stat().st_mtime + self.ttl >= time.time()
        except OSError:
            return False

    async def put(self, name: str, data: bytes, content_type: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"bad stored file name {name!r}")
        key = f"{secrets.token_urlsafe(12)}/{name}"
        folder = self.root / key.split("/", 1)[0]
        folder.mkdir()
        (folder / ".type").write_text(content_type)
        (folder / name).write_bytes(data)
        return key

    async def get(self, key: str) -> StoredFile | None:
        parts = _split_key(key)
        if parts is None:
            return None
        path = self.root / parts[0] / parts[1]
        if not self._fresh(path):
            return None
        try:
            content_type = (path.parent / ".type").read_text().strip() or "application/octet-stream"
        except OSError:
            return None
        return StoredFile(content_type, path=path)

    def _record_path(self, request_id: str) -> Path:
        if not _REQUEST_ID.match(request_id):
            raise ValueError(f"bad request id {request_id!r}")
        return self.root / _JOBS / f"{request_id}.json"

    async def put_record(self, request_id: str, record: dict[str, Any]) -> None:
        path = self._record_path(request_id)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    async def get_record(self, request_id: str) -> dict[str, Any] | None:
        try:
            path = self._record_path(request_id)
        except ValueError:
            return None
        if not self._fresh(path):
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    async def sweep(self) -> int:
        expired = 0
        for entry in list(self.root.iterdir()):
            if entry.name == _JOBS:
                for record in list(entry.glob("*.json")):
                    if not self._fresh(record):
                        record.unlink(missing_ok=True)
                        expired += 1
            elif entry.is_dir() and not self._fresh(entry / ".type"):
                shutil.rmtree(entry, ignore_errors=True)
                expired += 1
        return expired

    async def close(self) -> None:
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None


def parse_object_store(url: str) -> S3Location:
    """go-livepeer's `-objectStore` forms: `s3://KEY:SECRET@REGION/BUCKET[/PREFIX]` (AWS) and
    `s3+http(s)://KEY:SECRET@HOST[:PORT]/BUCKET[/PREFIX]` (any S3 API, `?region=` optional). The
    credentials may be left out (then boto3's chain: AWS_ACCESS_KEY_ID, ...). Raises ValueError."""
    parts = urlsplit(url)
    path = parts.path.strip("/")
    bucket, _, prefix = path.partition("/")
    if parts.scheme not in ("s3", "s3+http", "s3+https") or not parts.hostname or not bucket:
        raise ValueError(f"object store {_redacted(url)!r}: expected s3://KEY:SECRET@REGION/BUCKET or "
                         "s3+https://KEY:SECRET@HOST:PORT/BUCKET")  # fmt: skip
    key = unquote(parts.username) if parts.username else None
    secret = unquote(parts.password) if parts.password else None
    if (key is None) != (secret is None):
        raise ValueError(f"object store {_redacted(url)!r}: give both KEY and SECRET, or neither")
    query = dict(item.split("=", 1) for item in parts.query.split("&") if "=" in item)
    prefix = prefix + "/" if prefix else ""
    if parts.scheme == "s3":
        return S3Location(bucket, prefix, None, parts.hostname, key, secret)
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    endpoint = f"{parts.scheme.removeprefix('s3+')}://{host}"
    return S3Location(bucket, prefix, endpoint, query.get("region") or "us-east-1", key, secret)


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


class S3Store(_Sweeping):
    def __init__(self, location: S3Location, ttl: float) -> None:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        self.location = location
        self.ttl = ttl
        self._client: Any = boto3.client(
            "s3", endpoint_url=location.endpoint_url, region_name=location.region,
            aws_access_key_id=location.access_key, aws_secret_access_key=location.secret_key,
            config=Config(s3={"addressing_style": "path"} if location.endpoint_url else {}, retries={"max_attempts": 3}),
        )  # fmt: skip

    def _media_key(self, key: str) -> str:
        return f"{self.location.prefix}media/{key}"

    def _record_key(self, request_id: str) -> str:
        if not _REQUEST_ID.match(request_id):
            raise ValueError(f"bad request id {request_id!r}")
        return f"{self.location.prefix}jobs/{request_id}.json"

    def _fresh(self, modified: Any) -> bool:
        return bool(modified.timestamp() + self.ttl >= time.time())

    def _get(self, object_key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        try:
            answer = self._client.get_object(Bucket=self.location.bucket, Key=object_key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        with contextlib.closing(answer["Body"]) as body:
            if not self._fresh(answer["LastModified"]):
                return None
            return body.read(), str(answer.get("ContentType") or "application/octet-stream")

    def _put(self, object_key: str, data: bytes, content_type: str) -> None:
        self._client.put_object(Bucket=self.location.bucket, Key=object_key, Body=data, ContentType=content_type)

    async def put(self, name: str, data: bytes, content_type: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"bad stored file name {name!r}")
        key = f"{secrets.token_urlsafe(12)}/{name}"
        await asyncio.to_thread(self._put, self._media_key(key), data, content_type)
        return key

    async def get(self, key: str) -> StoredFile | None:
        if _split_key(key) is None:
            return None
        found = await asyncio.to_thread(self._get, self._media_key(key))
        return None if found is None else StoredFile(found[1], data=found[0])

    async def put_record(self, request_id: str, record: dict[str, Any]) -> None:
        await asyncio.to_thread(self._put, self._record_key(request_id), json.dumps(record).encode(), "application/json")

    async def get_record(self, request_id: str) -> dict[str, Any] | None:
        try:
            object_key = self._record_key(request_id)
        except ValueError:
            return None
        found = await asyncio.to_thread(self._get, object_key)
        if found is None:
            return None
        try:
            data = json.loads(found[0])
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _sweep(self) -> int:
        expired: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.location.bucket, Prefix=self.location.prefix):
            for item in page.get("Contents", []):
                key = str(item["Key"])
                inside = key[len(self.location.prefix):]
                if inside.startswith(("media/", "jobs/")) and not self._fresh(item["LastModified"]):
                    expired.append(key)
        for start in range(0, len(expired), 1000):
            batch = [{"Key": k} for k in expired[start:start + 1000]]
            self._client.delete_objects(Bucket=self.location.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(expired)

    async def sweep(self) -> int:
        return await asyncio.to_thread(self._sweep)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)


def open_store(object_store: str | None, storage_dir: Path | None, ttl: float) -> LocalStore | S3Store:
    if object_store:
        return S3Store(parse_object_store(object_store), ttl)
    return LocalStore(storage_dir, ttl)
