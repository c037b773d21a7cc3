"""The catalog and its stock. Reads come from this node's cache, writes from Postgres.

The catalog reads answer with the bytes the cache keeps encoded: FastAPI sends a
returned `Response` as it is, so `response_model` documents the body without
validating and encoding it again on every request. Most `GET /products/{sku}`
are answered before they reach the route, with the same bytes: `backend.reads`.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status

from backend import schemas
from backend.deps import CacheDep, DatabaseDep, SettingsDep, StoreDep
from backend.documents import Change, ChangeHistory, Product
from backend.errors import not_found
from backend.schemas import BODY, CACHE, DATABASE, REQUEST, WRITE, errors

router = APIRouter(tags=["products"])

SkuPath = Annotated[str, Path(pattern=schemas.SKU_PATTERN, description="The product's SKU")]
Before = Annotated[
    int | None,
    Query(ge=1, le=schemas.MAX_SAFE_INTEGER, description="A `next` from the previous page."),
]


@router.get("/products", response_model=schemas.ProductPage, responses=errors(*REQUEST, *CACHE))
async def list_products(
    cache: CacheDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    return _json(cache.page_body(after, limit))


@router.get(
    "/products/{sku}",
    response_model=schemas.Product,
    responses=errors("NOT_FOUND", *REQUEST, *CACHE),
)
async def get_product(sku: SkuPath, cache: CacheDep) -> Response:
    body = cache.body(sku)
    if body is None:
        raise not_found(f"no product with sku {sku}", sku=sku)
    return _json(body)


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


@router.post(
    "/products",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.Product,
    responses=errors("SKU_EXISTS", *BODY, *WRITE),
)
async def create_product(body: schemas.ProductCreate, store: StoreDep) -> Product:
    result = await store.create_product(
        body.sku, body.name, body.price_cents, body.on_hand, body.low_stock_threshold
    )
    product: Product = result["product"]
    return product


@router.patch(
    "/products/{sku}",
    response_model=schemas.Product,
    responses=errors("NOT_FOUND", "VERSION_CONFLICT", *BODY, *WRITE),
)
async def update_product(sku: SkuPath, body: schemas.ProductPatch, store: StoreDep) -> Product:
    result = await store.update_product(
        sku, body.name, body.price_cents, body.low_stock_threshold, body.expected_version
    )
    product: Product = result["product"]
    return product


@router.delete(
    "/products/{sku}",
    response_model=schemas.Product,
    responses=errors("NOT_FOUND", "HAS_HOLDS", *REQUEST, *WRITE),
)
async def delete_product(sku: SkuPath, store: StoreDep) -> Product:
    """Soft delete: refused with HAS_HOLDS while pending orders hold units of it."""
    result = await store.delete_product(sku)
    product: Product = result["product"]
    return product


@router.post(
    "/products/{sku}/adjustments",
    response_model=schemas.StockChange,
    responses=errors("NOT_FOUND", "OUT_OF_STOCK", *BODY, *WRITE),
)
async def adjust_stock(sku: SkuPath, body: schemas.Adjustment, store: StoreDep) -> Change:
    result = await store.adjust_stock(sku, body.delta, body.reason)
    change: Change = result["changes"][0]
    return change


@router.put(
    "/products/{sku}/stock",
    response_model=schemas.StockChange,
    responses=errors("NOT_FOUND", "VERSION_CONFLICT", "OUT_OF_STOCK", *BODY, *WRITE),
)
async def set_stock(sku: SkuPath, body: schemas.StockSet, store: StoreDep) -> Change:
    result = await store.set_stock(sku, body.on_hand, body.expected_version)
    change: Change = result["changes"][0]
    return change


@router.post(
    "/availability", response_model=schemas.AvailabilityResult, responses=errors(*BODY, *CACHE)
)
async def availability(
    body: schemas.AvailabilityQuery, cache: CacheDep, settings: SettingsDep
) -> dict[str, Any]:
    found, missing = [], []
    for sku in body.skus:
        product = cache.get(sku)
        if product is None:
            missing.append(sku)
        else:
            found.append(product)
    return {"node": settings.node_id, "items": found, "missing": missing}


@router.get(
    "/products/{sku}/events",
    response_model=schemas.StockChangePage,
    responses=errors("NOT_FOUND", *REQUEST, *CACHE, *DATABASE),
)
async def product_events(
    sku: SkuPath,
    db: DatabaseDep,
    cache: CacheDep,
    before: Before = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ChangeHistory:
    """The product's ledger, newest first. A deleted product's is in `/events`:
    its SKU, free for another product, names no product here."""
    if cache.get(sku) is None:
        raise not_found(f"no product with sku {sku}", sku=sku)
    return await db.list_stock_events(sku, before, limit)


@router.get(
    "/events", response_model=schemas.StockChangePage, responses=errors(*REQUEST, *DATABASE)
)
async def events(
    db: DatabaseDep,
    before: Before = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ChangeHistory:
    """The whole ledger, newest first."""
    return await db.list_stock_events(None, before, limit)
