"""Where receipts are kept: a private Supabase Storage bucket, or files in the data dir.

One receipt per order, the latest: `<order_id>/receipt.html` and
`<order_id>/receipt.txt`, overwritten by each notification of the order. A
receipt is rendered from the order as it stands, so the latest one is also the
most complete (a refund's receipt lists the payment before it); what each mail
said is in the mail itself.

In Supabase mode (SUPABASE_URL) the files go to the RECEIPTS_BUCKET bucket
through supabase-py's storage client, as the service role. The bucket is
created private if it is missing, and a public one is refused: receipts name
customers and what they bought. Otherwise they are files under RECEIPTS_DIR,
each written whole (to a temporary name, then renamed) so a reader never sees
half of one.
"""

import asyncio
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal, Protocol
from uuid import UUID

import httpx
from storage3.exceptions import StorageApiError
from storage3.types import FileOptions
from storage3.utils import StorageException
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from backend.errors import AppError
from backend.notify.receipts import Receipt
from backend.settings import Settings

log = logging.getLogger(__name__)

Format = Literal["html", "text"]
SUFFIX: dict[Format, str] = {"html": "html", "text": "txt"}
CONTENT_TYPE: dict[Format, str] = {
    "html": "text/html; charset=utf-8",
    "text": "text/plain; charset=utf-8",
}


def key(order_id: UUID, fmt: Format) -> str:
    """The receipt's name in the bucket or under RECEIPTS_DIR."""
    return f"{order_id}/receipt.{SUFFIX[fmt]}"


def bodies(receipt: Receipt) -> list[tuple[Format, str]]:
    return [("text", receipt.text), ("html", receipt.html)]


def storage_error(exc: Exception) -> AppError:
    return AppError(503, "STORAGE_UNAVAILABLE", f"receipt storage failed: {exc}")


class ReceiptStore(Protocol):
    where: str

    async def put(self, order_id: UUID, receipt: Receipt) -> str:
        """Keep the order's latest receipt; return where it is (the notification's ref)."""

    async def get(self, order_id: UUID, fmt: Format) -> str | None:
        """The order's latest receipt, or None when it has none yet."""

    async def aclose(self) -> None: ...


class FileReceipts:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.where = f"files under {directory}"

    async def put(self, order_id: UUID, receipt: Receipt) -> str:
        await asyncio.to_thread(self._write, order_id, receipt)
        return str(self.directory / str(order_id))

    def _write(self, order_id: UUID, receipt: Receipt) -> None:
        for fmt, body in bodies(receipt):
            path = self.directory / key(order_id, fmt)
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".receipt-")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    out.write(body)
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise

    async def get(self, order_id: UUID, fmt: Format) -> str | None:
        path = self.directory / key(order_id, fmt)
        try:
            return await asyncio.to_thread(path.read_text, encoding="utf-8")
        except FileNotFoundError:
            return None

    async def aclose(self) -> None:
        return None


class BucketReceipts:
    """A private Supabase Storage bucket, reached with the node's service role key."""

    def __init__(self, url: str, service_key: str, bucket: str, timeout: float) -> None:
        self._url = url
        self._key = service_key
        self.bucket = bucket
        self.where = f"Supabase Storage bucket {bucket!r} (private)"
        self._timeout = timeout
        self._http: httpx.AsyncClient | None = None
        self._client: AsyncClient | None = None
        self._bucket_ready = False
        self._lock = asyncio.Lock()

    async def _storage(self) -> AsyncClient:
        async with self._lock:
            if self._client is None:
                self._http = httpx.AsyncClient(
                    timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 5.0))
                )
                options = AsyncClientOptions(
                    httpx_client=self._http, auto_refresh_token=False, persist_session=False
                )
                self._client = await acreate_client(self._url, self._key, options=options)
            if not self._bucket_ready:
                await self._ensure_bucket(self._client)
                self._bucket_ready = True
            return self._client

    async def _ensure_bucket(self, client: AsyncClient) -> None:
        try:
            found = await client.storage.get_bucket(self.bucket)
        except StorageApiError as exc:
            if str(exc.status) != "404":
                raise
            try:
                await client.storage.create_bucket(self.bucket, options={"public": False})
                log.info("created the private storage bucket %r for receipts", self.bucket)
            except StorageApiError as again:
                if str(again.status) != "409":  # another node made it meanwhile
                    raise
            return
        if found.public:
            raise AppError(
                503,
                "STORAGE_UNAVAILABLE",
                f"the storage bucket {self.bucket!r} is public; receipts name customers and"
                " what they bought: make it private or set RECEIPTS_BUCKET to another",
            )

    async def put(self, order_id: UUID, receipt: Receipt) -> str:
        try:
            bucket = (await self._storage()).storage.from_(self.bucket)
            for fmt, body in bodies(receipt):
                options: FileOptions = {"content-type": CONTENT_TYPE[fmt], "upsert": "true"}
                await bucket.upload(key(order_id, fmt), body.encode(), options)
        except (StorageException, httpx.HTTPError) as exc:
            raise storage_error(exc) from exc
        return f"{self.bucket}/{order_id}"

    async def get(self, order_id: UUID, fmt: Format) -> str | None:
        try:
            bucket = (await self._storage()).storage.from_(self.bucket)
            body = await bucket.download(key(order_id, fmt))
        except StorageApiError as exc:
            if str(exc.status) == "404":
                return None
            raise storage_error(exc) from exc
        except (StorageException, httpx.HTTPError) as exc:
            raise storage_error(exc) from exc
        return body.decode("utf-8")

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
            self._client = None
            self._bucket_ready = False


def open_receipts(settings: Settings) -> ReceiptStore:
    """The store the settings choose: Supabase's bucket in Supabase mode, else files."""
    service_key = settings.supabase_service_role_key
    if settings.supabase_url and service_key is not None:
        return BucketReceipts(
            settings.supabase_url,
            service_key.get_secret_value(),
            settings.receipts_bucket,
            settings.supabase_timeout,
        )
    return FileReceipts(Path(settings.receipts_dir).resolve())
