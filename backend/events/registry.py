"""Which consumers a node runs: one per name in WORKERS.

Each consumer's module is imported only when a node runs it, so its own
dependencies (an SMTP client, httpx) load only where they are needed.
"""

import importlib
from typing import TYPE_CHECKING, cast

from backend.events.consumer import Consumer

if TYPE_CHECKING:
    from backend.node import Node

# name in WORKERS -> (module, class); the class takes the Node.
KNOWN: dict[str, tuple[str, str]] = {
    "payments": ("backend.payments.consumer", "PaymentConsumer"),
    "notifications": ("backend.notify.consumer", "NotificationConsumer"),
    "webhooks": ("backend.webhooks.consumer", "WebhookConsumer"),
}


def consumers(node: "Node") -> list[Consumer]:
    """The consumers named in `settings.worker_names`, in that order."""
    return [build(name, node) for name in node.settings.worker_names]


def check(names: list[str]) -> None:
    """An unknown name is a start-up error, with or without Redis to run it."""
    if unknown := [name for name in names if name not in KNOWN]:
        known = ", ".join(KNOWN)
        raise ValueError(f"WORKERS names unknown consumers {unknown} (known: {known})")


def build(name: str, node: "Node") -> Consumer:
    """One consumer by its name."""
    check([name])
    module, cls = KNOWN[name]
    return cast(Consumer, getattr(importlib.import_module(module), cls)(node))
