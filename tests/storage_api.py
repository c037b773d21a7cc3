"""Supabase Storage's API, stood in for with respx, for the receipts kept in a bucket.

Like `tests/postgrest.py` for PostgREST: Supabase Storage cannot run here, so
respx answers `<SUPABASE_URL>/storage/v1/...` the way the Storage API does,
for the calls supabase-py's storage client makes to keep and read receipts:

* `GET /bucket/{id}` (the bucket, or 404 "Bucket not found"),
  `POST /bucket` `{"id", "name", "public"}` (`{"name"}`, or 409 "Duplicate");
* `POST /object/{bucket}/{path}`: a multipart/form-data body with one file
  part; an existing object is replaced only with `x-upsert: true` (else 409
  "Duplicate"); answers `{"Key": "<bucket>/<path>", "Id"}`;
* `GET /object/{bucket}/{path}` (authenticated download): the bytes with their
  content type, or 404 "Object not found".

Errors are the Storage API's body `{"statusCode": "<status>", "error", "message"}`
(storage3 reads the status from the body, not from HTTP). Only the service
role key may do any of it (a private bucket has no policies for other roles).
Anything else is not modelled and fails the test with an AssertionError.
"""

import json
import re
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP

import httpx
import respx

from tests.postgrest import SERVICE_ROLE_KEY, SUPABASE_URL

BASE = f"{SUPABASE_URL}/storage/v1"


def storage_error(status: int, error: str, message: str) -> httpx.Response:
    body = {"statusCode": str(status), "error": error, "message": message}
    return httpx.Response(status, json=body)


@dataclass
class StoredObject:
    content: bytes
    content_type: str


@dataclass
class StorageAPI:
    buckets: dict[str, dict[str, object]] = field(default_factory=dict)
    objects: dict[tuple[str, str], StoredObject] = field(default_factory=dict)

    def mount(self, router: respx.MockRouter) -> None:
        bucket = rf"^{re.escape(BASE)}/bucket/(?P<bucket_id>[^/?]+)$"
        obj = rf"^{re.escape(BASE)}/object/(?P<bucket_id>[^/?]+)/(?P<path>[^?]+)"
        router.get(url__regex=bucket).mock(side_effect=self.get_bucket)
        router.post(f"{BASE}/bucket").mock(side_effect=self.create_bucket)
        router.post(url__regex=obj).mock(side_effect=self.upload)
        router.get(url__regex=obj).mock(side_effect=self.download)

    def add_bucket(self, bucket_id: str, public: bool, name: str | None = None) -> None:
        """A bucket as the Storage API describes it (made by an API call, or by hand)."""
        self.buckets[bucket_id] = {
            "id": bucket_id,
            "name": name or bucket_id,
            "owner": "",
            "public": public,
            "file_size_limit": None,
            "allowed_mime_types": None,
            "created_at": "2026-01-01T00:00:00.000Z",
            "updated_at": "2026-01-01T00:00:00.000Z",
        }

    def _refused(self, request: httpx.Request) -> httpx.Response | None:
        if request.headers.get("apikey") != SERVICE_ROLE_KEY:
            return storage_error(403, "Unauthorized", "Invalid API key")
        if request.headers.get("authorization") != f"Bearer {SERVICE_ROLE_KEY}":
            return storage_error(403, "Unauthorized", "new row violates row-level security policy")
        return None

    def get_bucket(self, request: httpx.Request, bucket_id: str) -> httpx.Response:
        if refused := self._refused(request):
            return refused
        if bucket_id not in self.buckets:
            return storage_error(404, "Bucket not found", "Bucket not found")
        return httpx.Response(200, json=self.buckets[bucket_id])

    def create_bucket(self, request: httpx.Request) -> httpx.Response:
        if refused := self._refused(request):
            return refused
        body = json.loads(request.content)
        assert set(body) <= {"id", "name", "public", "file_size_limit", "allowed_mime_types"}
        if body["id"] in self.buckets:
            return storage_error(409, "Duplicate", "The resource already exists")
        self.add_bucket(body["id"], bool(body.get("public", False)), body.get("name"))
        return httpx.Response(200, json={"name": body["id"]})

    def upload(self, request: httpx.Request, bucket_id: str, path: str) -> httpx.Response:
        if refused := self._refused(request):
            return refused
        if bucket_id not in self.buckets:
            return storage_error(404, "Bucket not found", "Bucket not found")
        if (bucket_id, path) in self.objects and request.headers.get("x-upsert") != "true":
            return storage_error(409, "Duplicate", "The resource already exists")
        self.objects[(bucket_id, path)] = _file_part(request)
        return httpx.Response(200, json={"Key": f"{bucket_id}/{path}", "Id": str(uuid.uuid4())})

    def download(self, request: httpx.Request, bucket_id: str, path: str) -> httpx.Response:
        if refused := self._refused(request):
            return refused
        assert not request.url.query, "transformations are not modelled"
        stored = self.objects.get((bucket_id, path))
        if stored is None:
            return storage_error(404, "not_found", "Object not found")
        return httpx.Response(
            200, content=stored.content, headers={"Content-Type": stored.content_type}
        )


def _file_part(request: httpx.Request) -> StoredObject:
    """The one file of a multipart/form-data upload, as the Storage API reads it."""
    content_type = request.headers["content-type"]
    assert content_type.startswith("multipart/form-data"), content_type
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    form = BytesParser(policy=HTTP).parsebytes(head + request.content)
    files = [part for part in form.iter_parts() if part.get_filename()]
    assert len(files) == 1, "one file per upload"
    payload = files[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    part = files[0]
    charset = part.get_content_charset()
    kind = part.get_content_type() + (f"; charset={charset}" if charset else "")
    return StoredObject(payload, kind)
