"""The hub's rules without servers: bursts, coalescing, bounds, filters, follows, encode-once,
shutdown."""

import asyncio
import json
from uuid import UUID, uuid4

import pytest

from backend.cache import StockCache
from backend.documents import Change, Json, Order
from backend.errors import not_found
from backend.hub import MAX_BATCH, MAX_CONTROL, PING, SERVICE_RESTART, Hub, Mailbox, reconnect


def change(
    sku: str, version: int, *, order_id: UUID | None = None, deleted: bool = False
) -> Change:
    return {
        "sku": sku,
        "product_id": ord(sku[0]),
        "name": sku,
        "price_cents": 100,
        "low_stock_threshold": 1,
        "on_hand": 10 + version,
        "reserved": 0,
        "available": 10 + version,
        "delta_on_hand": 1,
        "delta_reserved": 0,
        "version": version,
        "seq": version,
        "reason": "restock",
        "order_id": str(order_id) if order_id else None,
        "node": "node-a",
        "committed_at": "2026-01-01T00:00:00+00:00",
        "deleted": deleted,
    }


def order(order_id: UUID, status: str = "pending") -> Order:
    return {
        "id": str(order_id),
        "status": status,
        "customer_id": None,
        "items": [
            {
                "sku": "A",
                "quantity": 1,
                "unit_price_cents": 100,
                "line_total_cents": 100,
                "refunded_quantity": 0,
            }
        ],
        "subtotal_cents": 100,
        "fee_cents": 20,
        "total_cents": 120,
        "node_id": "node-a",
        "expires_at": "2026-01-01T00:15:00+00:00",
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00",
        "payment_method": None,
        "paid_cents": 0,
        "refunded_cents": 0,
        "cancel_reason": None,
        "refunds": [],
    }


class Orders:
    """The hub's order fetcher: orders by id, and how often it was asked."""

    def __init__(self) -> None:
        self.orders: dict[UUID, Order] = {}
        self.fetches = 0

    async def __call__(self, order_id: UUID) -> Order:
        self.fetches += 1
        if order_id not in self.orders:
            raise not_found("no such order", order_id=str(order_id))
        return self.orders[order_id].copy()


class World:
    """A hub over a real cache, fed the way `Sync` feeds it."""

    def __init__(self, max_pending: int = 100) -> None:
        self.cache = StockCache()
        self.orders = Orders()
        self.hub = Hub("node-a", self.cache, self.orders, max_pending)

    def apply(self, *changes: Change) -> None:
        """Changes applied together; they go out on the loop's next turn."""
        for one in changes:
            self.hub.on_change(one, self.cache.apply(one), "bus")

    def publish(self, *changes: Change) -> None:
        """Changes applied together, out at once: one burst."""
        self.apply(*changes)
        self.hub.flush()

    async def joined(self, skus: frozenset[str] | None = None) -> Mailbox:
        """A client past its first snapshot."""
        box = self.hub.join(skus)
        assert (await box.take())[0]
        return box


def unbatched(texts: list[str]) -> list[Json]:
    messages: list[Json] = []
    for text in texts:
        message = json.loads(text)
        messages += message["messages"] if message["type"] == "batch" else [message]
    return messages


async def news(box: Mailbox) -> tuple[bool, list[Json]]:
    """What the client gets next, each change of a batch as a message of its own."""
    async with asyncio.timeout(1):
        snapshot, texts = await box.take()
    return snapshot, unbatched(texts)


def versions(messages: list[Json]) -> list[tuple[str, int]]:
    return [(m["sku"], m["version"]) for m in messages if m["type"] == "stock"]


async def test_a_new_client_first_gets_a_snapshot_of_what_it_wants() -> None:
    world = World()
    world.publish(change("A", 1), change("B", 1))
    everything, only_a = world.hub.join(None), world.hub.join(frozenset({"A"}))

    assert await news(everything) == (True, [])
    snapshot = json.loads(world.hub.snapshot(everything))
    assert (snapshot["type"], snapshot["node"]) == ("snapshot", "node-a")
    assert [p["sku"] for p in snapshot["products"]] == ["A", "B"]
    assert [p["sku"] for p in json.loads(world.hub.snapshot(only_a))["products"]] == ["A"]


async def test_changes_coalesce_per_sku_and_the_latest_wins() -> None:
    world = World()
    world.publish(change("A", 1), change("B", 1))
    box = await world.joined()

    for one in (change("A", 2), change("A", 3), change("B", 2), change("A", 4)):
        world.publish(one)  # four bursts: the client has not taken the first

    assert (box.pending, box.coalesced) == (2, 2)
    assert await news(box) == (
        False,
        [{"type": "stock", **change("A", 4)}, {"type": "stock", **change("B", 2)}],
    )
    assert box.pending == 0


async def test_each_change_is_encoded_once_for_every_mailbox() -> None:
    world = World()
    world.publish(change("A", 1))
    boxes = [await world.joined() for _ in range(3)]
    snapshots = [world.hub.snapshot(box) for box in boxes]
    assert all(text is snapshots[0] for text in snapshots)  # one snapshot text too

    world.publish(change("A", 2))

    texts = [(await box.take())[1] for box in boxes]
    assert all(len(sent) == 1 and sent[0] is texts[0][0] for sent in texts)
    assert json.loads(texts[0][0])["type"] == "stock"  # a burst of one: the plain message
    assert json.loads(world.hub.snapshot(boxes[0]))["products"][0]["version"] == 2


async def test_a_filtered_client_hears_only_its_skus_until_it_changes_the_filter() -> None:
    world = World()
    world.publish(change("A", 1), change("B", 1))
    box = await world.joined(frozenset({"A"}))

    world.publish(change("B", 2))
    assert box.pending == 0
    world.publish(change("A", 2))
    assert versions((await news(box))[1]) == [("A", 2)]

    box.skus = frozenset({"B"})
    box.resnapshot()
    assert await news(box) == (True, [])
    assert [p["sku"] for p in json.loads(world.hub.snapshot(box))["products"]] == ["B"]


async def test_stale_changes_reach_nobody() -> None:
    world = World()
    world.publish(change("A", 1), change("A", 2))
    box = await world.joined()

    world.publish(change("A", 2), change("A", 1))

    assert box.pending == 0


async def test_a_client_too_far_behind_gets_a_fresh_snapshot_instead() -> None:
    world = World(max_pending=3)
    box = await world.joined()

    for sku in "ABCD":
        world.publish(change(sku, 1))
    assert box.pending == 0  # dropped for a snapshot of the latest state
    world.publish(change("E", 1), change("A", 2))  # a snapshot is coming: nothing to keep

    assert box.pending == 0
    assert box.coalesced == 4
    assert await news(box) == (True, [])
    products = json.loads(world.hub.snapshot(box))["products"]
    assert [(p["sku"], p["version"]) for p in products] == [(s, 1 + (s == "A")) for s in "ABCDE"]


async def test_a_client_that_never_reads_holds_one_change_per_sku_and_a_few_messages() -> None:
    world = World(max_pending=10_000)
    box = await world.joined()

    for version in range(1, 101):
        world.publish(*(change(f"{sku}-SKU", version) for sku in "ABCDEFGHIJ"))
        box.say(PING)

    assert box.pending == 10 + MAX_CONTROL
    assert box.coalesced == 10 * 99
    snapshot, messages = await news(box)
    assert not snapshot
    assert [m["type"] for m in messages] == ["ping"] * MAX_CONTROL + ["stock"] * 10
    assert {version for _, version in versions(messages)} == {100}


async def test_a_resync_sends_every_client_a_snapshot() -> None:
    world = World()
    world.publish(change("A", 1))
    boxes = [await world.joined(), await world.joined(frozenset({"A"}))]
    world.publish(change("A", 2))

    world.hub.resync_all()

    for box in boxes:
        assert await news(box) == (True, [])


async def test_take_waits_for_news() -> None:
    world = World()
    box = await world.joined()
    waiting = asyncio.create_task(box.take())
    await asyncio.sleep(0)  # one turn of the loop: it is waiting, not done
    assert not waiting.done()

    world.publish(change("A", 1))

    async with asyncio.timeout(1):
        snapshot, texts = await waiting
    assert (snapshot, versions([json.loads(t) for t in texts])) == (False, [("A", 1)])


async def test_a_follower_gets_the_order_and_every_change_of_it_until_it_unfollows() -> None:
    world = World()
    order_id = uuid4()
    world.orders.orders[order_id] = order(order_id)
    world.publish(change("A", 1))
    follower, quitter = await world.joined(), await world.joined()

    for box in (follower, quitter):
        await world.hub.follow(box, order_id, most=10)
        assert (await news(box))[1] == [{"type": "order", "order": world.orders.orders[order_id]}]
    world.hub.unfollow(quitter, order_id)

    world.orders.orders[order_id]["status"] = "confirmed"
    world.publish(change("A", 2, order_id=order_id))
    assert versions((await news(quitter))[1]) == [("A", 2)]
    assert versions((await news(follower))[1]) == [("A", 2)]
    assert (await news(follower))[1] == [{"type": "order", "order": world.orders.orders[order_id]}]
    assert quitter.pending == 0  # the same push reached every follower, and not the quitter


async def test_a_client_that_leaves_follows_nothing_any_more() -> None:
    world = World()
    order_id = uuid4()
    world.orders.orders[order_id] = order(order_id)
    box = await world.joined()
    await world.hub.follow(box, order_id, most=10)
    fetches = world.orders.fetches

    world.hub.leave(box)
    world.publish(change("A", 1, order_id=order_id))
    await asyncio.sleep(0)  # a push, had one started, would have fetched by now

    assert world.orders.fetches == fetches
    assert world.hub.mailboxes == {}


async def test_following_is_bounded_and_an_unknown_order_is_an_error() -> None:
    world = World()
    box = await world.joined()
    known = [uuid4(), uuid4()]
    for order_id in known:
        world.orders.orders[order_id] = order(order_id)
        await world.hub.follow(box, order_id, most=2)

    await world.hub.follow(box, uuid4(), most=2)
    await world.hub.follow(box, known[0], most=2)  # already followed: not one more
    world.hub.unfollow(box, known[1])
    await world.hub.follow(box, unknown := uuid4(), most=2)

    messages = (await news(box))[1]
    kinds = [m.get("code", m["type"]) for m in messages]
    assert kinds == ["order", "order", "TOO_MANY_FOLLOWS", "order", "NOT_FOUND"]
    assert box.orders == {str(known[0])}
    assert str(unknown) not in box.orders


async def test_a_finished_mailbox_sends_its_farewell_last_and_nothing_after() -> None:
    world = World()
    box = await world.joined()
    world.publish(change("A", 1))

    box.finish(SERVICE_RESTART, reconnect("lifetime"))
    box.finish(1003)  # the first ending wins
    box.say(PING)
    world.publish(change("A", 2))

    assert (box.closing, box.close_code) == (True, SERVICE_RESTART)
    assert await news(box) == (False, [{"type": "reconnect", "reason": "lifetime"}])
    assert await news(box) == (False, [])  # and at once, from now on: it is over


async def test_shutdown_tells_every_client_to_reconnect_and_waits_until_they_leave() -> None:
    world = World()
    boxes = [await world.joined() for _ in range(3)]
    shutdown = asyncio.create_task(world.hub.shutdown(5))

    for box in boxes:
        assert await news(box) == (False, [{"type": "reconnect", "reason": "shutdown"}])
        assert box.close_code == SERVICE_RESTART
        assert not shutdown.done()
        world.hub.leave(box)

    async with asyncio.timeout(1):
        await shutdown
    assert world.hub.closing


async def test_shutdown_gives_up_on_clients_that_stay() -> None:
    world = World()
    await world.joined()

    async with asyncio.timeout(1):
        await world.hub.shutdown(0.01)

    assert len(world.hub.mailboxes) == 1


def test_an_address_gets_its_share_of_connections_and_no_more() -> None:
    hub = World().hub
    boxes = [hub.join(None, "10.0.0.1") for _ in range(2)]

    assert not hub.admits("10.0.0.1", 2)
    assert hub.admits("10.0.0.2", 2)
    hub.leave(boxes[0])
    hub.leave(boxes[0])  # twice changes nothing
    assert hub.admits("10.0.0.1", 2)
    assert not hub.admits("10.0.0.1", 1)


async def test_coalesced_counts_outlive_the_clients() -> None:
    world = World()
    box = await world.joined()
    for version in (1, 2, 3):
        world.publish(change("A", version))

    world.hub.leave(box)

    assert world.hub.coalesced == 2


@pytest.mark.parametrize("skus", [None, frozenset({"A"})])
async def test_a_deleted_product_leaves_the_snapshot(skus: frozenset[str] | None) -> None:
    world = World()
    world.publish(change("A", 1), change("B", 1))
    box = await world.joined(skus)

    world.publish(change("A", 2, deleted=True))

    assert versions((await news(box))[1]) == [("A", 2)]
    assert "A" not in [p["sku"] for p in json.loads(world.hub.snapshot(box))["products"]]


async def test_changes_applied_together_go_out_in_one_batch_frame_shared_by_every_client() -> None:
    world = World()
    boxes = [await world.joined() for _ in range(3)]

    world.publish(change("A", 1, order_id=uuid4()), change("B", 1), change("A", 2))

    frames = [(await box.take())[1] for box in boxes]
    assert all(len(sent) == 1 and sent[0] is frames[0][0] for sent in frames)
    batch = json.loads(frames[0][0])
    assert batch["type"] == "batch"
    assert versions(batch["messages"]) == [("A", 1), ("B", 1), ("A", 2)]  # nothing coalesced


async def test_a_filtered_client_gets_only_its_skus_of_a_batch() -> None:
    world = World()
    just_b, also_just_b = await world.joined(frozenset({"B"})), await world.joined(frozenset({"B"}))
    a_and_c, d = await world.joined(frozenset({"A", "C"})), await world.joined(frozenset({"D"}))

    world.publish(change("A", 1), change("B", 1), change("C", 1))

    (_, [text]), (_, [same]) = await just_b.take(), await also_just_b.take()
    assert text is same  # one frame per filter
    assert json.loads(text) == {"type": "stock", **change("B", 1)}  # a batch of one: plain
    (_, [text]) = await a_and_c.take()
    assert json.loads(text)["type"] == "batch"
    assert versions(json.loads(text)["messages"]) == [("A", 1), ("C", 1)]
    assert d.pending == 0


async def test_changes_applied_in_one_turn_of_the_loop_go_out_together_on_the_next() -> None:
    world = World()
    box = await world.joined()

    world.apply(change("A", 1), change("B", 1))
    world.apply(change("C", 1))
    assert box.pending == 0  # not yet: more may come in this turn

    _, [text] = await box.take()
    assert versions(json.loads(text)["messages"]) == [("A", 1), ("B", 1), ("C", 1)]


async def test_a_client_behind_gets_the_latest_per_sku_in_frames_of_its_own() -> None:
    world = World()
    box, other = await world.joined(), await world.joined()
    world.publish(change("A", 1), change("B", 1))
    assert (await other.take())[1]  # this one keeps up

    world.publish(change("A", 2), change("C", 1))

    _, texts = await box.take()
    assert versions(unbatched(texts)) == [("A", 2), ("B", 1), ("C", 1)]
    assert (box.coalesced, other.coalesced) == (1, 0)
    assert versions(unbatched((await other.take())[1])) == [("A", 2), ("C", 1)]


async def test_a_large_burst_goes_out_in_frames_of_at_most_max_batch_changes() -> None:
    world = World()
    box = await world.joined()

    world.publish(*(change(f"SKU-{i:04d}", 1) for i in range(MAX_BATCH + 1)))

    _, texts = await box.take()
    assert [len(json.loads(text).get("messages", [None])) for text in texts] == [MAX_BATCH, 1]
    assert len(versions(unbatched(texts))) == MAX_BATCH + 1
