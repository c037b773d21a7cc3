"""The node's in-memory copy of the catalog's stock.

Every committed change carries the product's whole resulting state and its
version, so applying is a comparison, never arithmetic: a change is taken only
if it is newer than what the cache holds. Newer means a higher (product id,
version): a SKU deleted and created again is a new product with a higher id.

Reads far outnumber changes, so each product is also kept as the JSON body the
API answers with, encoded at its first read after a change and served as is
until the next change.
"""

import bisect
from dataclasses import dataclass
from enum import Enum

from pydantic import TypeAdapter

from backend import schemas
from backend.documents import Change, Json, Product, Tombstone

__all__ = ["Json", "Outcome", "StockCache", "encode_product", "product_from_change"]

_PRODUCT = TypeAdapter(schemas.Product)
_NEXT = TypeAdapter(str | None)


def encode_product(product: Product) -> bytes:
    """The body FastAPI would send for it as a `schemas.Product`: the same bytes."""
    return _PRODUCT.dump_json(_PRODUCT.validate_python(product), by_alias=True)


class Outcome(Enum):
    APPLIED = "applied"
    STALE = "stale"  # older than or equal to what we hold: dropped
    GAP = "gap"  # applied, but versions were skipped: worth a re-read


@dataclass(frozen=True, order=True)
class _Stamp:
    product_id: int
    version: int


def product_from_change(change: Change) -> Product:
    return {
        "id": change["product_id"],
        "sku": change["sku"],
        "name": change["name"],
        "price_cents": change["price_cents"],
        "on_hand": change["on_hand"],
        "reserved": change["reserved"],
        "available": change["available"],
        "low_stock_threshold": change["low_stock_threshold"],
        "version": change["version"],
        "updated_at": change["committed_at"],
    }


class StockCache:
    def __init__(self) -> None:
        self._products: dict[str, Product] = {}
        self._stamps: dict[str, _Stamp] = {}  # kept for deleted SKUs too
        self._skus: list[str] = []  # sorted live SKUs, for pages
        self._bodies: dict[str, bytes] = {}  # encoded products, since their last change

    def __len__(self) -> int:
        return len(self._products)

    def get(self, sku: str) -> Product | None:
        return self._products.get(sku)

    def body(self, sku: str) -> bytes | None:
        """The product as the JSON body of `GET /products/{sku}`; None if there is none."""
        body = self._bodies.get(sku)
        if body is None:
            product = self._products.get(sku)
            if product is None:
                return None
            body = self._bodies[sku] = encode_product(product)
        return body

    def version_of(self, sku: str) -> int | None:
        stamp = self._stamps.get(sku)
        return stamp.version if stamp else None

    def holds(self, sku: str, product_id: int, version: int) -> bool:
        """Whether a change of `sku` at this product and version would be stale here."""
        held = self._stamps.get(sku)
        return held is not None and _Stamp(product_id, version) <= held

    def jump(self, change: Change) -> int:
        """How many versions ahead of what we hold `change` is (its version, for a
        product we have not seen: a new one starts at 1)."""
        stamp = self._stamps.get(change["sku"])
        if stamp is None or stamp.product_id != change["product_id"]:
            return int(change["version"])
        return int(change["version"]) - stamp.version

    def early(self, change: Change) -> bool:
        """Whether `change` skips versions of the product we hold (one came before it)."""
        stamp = self._stamps.get(change["sku"])
        return (
            stamp is not None
            and stamp.product_id == change["product_id"]
            and change["version"] > stamp.version + 1
        )

    def page(self, after: str | None, limit: int) -> tuple[list[Product], str | None]:
        skus, next_sku = self._page(after, limit)
        return [self._products[sku] for sku in skus], next_sku

    def page_body(self, after: str | None, limit: int) -> bytes:
        """`page` as the JSON body of `GET /products` (a `schemas.ProductPage`)."""
        skus, next_sku = self._page(after, limit)
        items = b",".join([self._body_of(sku) for sku in skus])
        return b'{"items":[' + items + b'],"next":' + _NEXT.dump_json(next_sku) + b"}"

    def _page(self, after: str | None, limit: int) -> tuple[list[str], str | None]:
        """Up to `limit` live SKUs after `after`, and the last of them if more follow."""
        start = bisect.bisect_right(self._skus, after) if after is not None else 0
        skus = self._skus[start : start + limit]
        more = start + limit < len(self._skus)
        return skus, (skus[-1] if more and skus else None)

    def _body_of(self, sku: str) -> bytes:
        body = self.body(sku)
        assert body is not None  # a live SKU
        return body

    def all(self) -> list[Product]:
        return [self._products[sku] for sku in self._skus]

    def load(self, products: list[Product], tombstones: list[Tombstone]) -> None:
        """Merge a full snapshot: what it lacks is forgotten, what we hold newer is kept.

        The snapshot names every SKU the database knows: its live product, or
        the tombstone of its latest, deleted one. Keeping the tombstones' stamps
        is what makes a late change of a deleted product stale instead of
        bringing it back. A product created after the snapshot was taken is
        forgotten; the catch-up that follows every load brings it back.
        """
        known = {product["sku"] for product in products} | {dead["sku"] for dead in tombstones}
        for sku in list(self._stamps):
            if sku not in known:
                self._remove(sku)
                del self._stamps[sku]
        for product in products:
            self._load_one(product)
        for dead in tombstones:
            self._bury(dead)

    def _load_one(self, product: Product) -> None:
        """Take a product as read from the database, if it is newer than ours."""
        stamp = _Stamp(product["id"], product["version"])
        held = self._stamps.get(product["sku"])
        if held is None or stamp > held:
            self._put(product, stamp)

    def _bury(self, tombstone: Tombstone) -> None:
        """Take a deletion as read from the database, if it is newer than what we hold."""
        stamp = _Stamp(tombstone["product_id"], tombstone["version"])
        held = self._stamps.get(tombstone["sku"])
        if held is None or stamp > held:
            self._remove(tombstone["sku"])
            self._stamps[tombstone["sku"]] = stamp

    def apply(self, change: Change) -> Outcome:
        sku = change["sku"]
        if self.holds(sku, change["product_id"], change["version"]):
            return Outcome.STALE
        stamp = _Stamp(change["product_id"], change["version"])
        held = self._stamps.get(sku)
        gap = (
            held is not None
            and stamp.product_id == held.product_id
            and stamp.version != held.version + 1
        )
        if change["deleted"]:
            self._remove(sku)
            self._stamps[sku] = stamp
        else:
            self._put(product_from_change(change), stamp)
        return Outcome.GAP if gap else Outcome.APPLIED

    def _put(self, product: Product, stamp: _Stamp) -> None:
        sku = product["sku"]
        if sku not in self._products:
            bisect.insort(self._skus, sku)
        self._products[sku] = product
        self._stamps[sku] = stamp
        self._bodies.pop(sku, None)

    def _remove(self, sku: str) -> None:
        self._bodies.pop(sku, None)
        if self._products.pop(sku, None) is not None:
            del self._skus[bisect.bisect_left(self._skus, sku)]
