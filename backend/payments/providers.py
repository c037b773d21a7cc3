"""Who takes the money: one small interface, one provider per PAYMENT_PROVIDER.

A provider either charges a placed order itself (`charges` is true: the
payment consumer asks it, and records what it answers), or learns the outcome
some other way: the webhook provider is told by the payment service calling
`POST /payments/webhook`, the manual one by staff confirming the order.

A charge may be asked more than once for one order (the events stream delivers
at least once): the request carries the event's id as its idempotency key, as
a real provider's API expects one, and the outcome is recorded once per event.
"""

import asyncio
from dataclasses import dataclass
from typing import Literal, Protocol
from uuid import UUID

from backend.settings import Settings

Outcome = Literal["succeeded", "failed"]

# The simulated provider's methods; an order that names none pays as `test_ok`.
TEST_OK = "test_ok"
TEST_DECLINE = "test_decline"
TEST_FLAKY = "test_flaky"
SIMULATED_METHODS = (TEST_OK, TEST_DECLINE, TEST_FLAKY)


@dataclass(frozen=True)
class ChargeRequest:
    order_id: UUID
    amount_cents: int
    method: str | None
    idempotency_key: UUID  # the order.placed event's id: one charge per event
    attempt: int  # 1-based: the how-manieth delivery of that event


@dataclass(frozen=True)
class Charge:
    outcome: Outcome
    ref: str | None  # the provider's id of the payment
    detail: str | None = None  # why it failed, in the provider's words


class TransientPaymentError(Exception):
    """The provider could not answer now (a timeout, a 503): ask again later."""


class PaymentProvider(Protocol):
    name: str
    charges: bool  # whether the payment consumer charges placed orders through it

    async def charge(self, request: ChargeRequest) -> Charge | None:
        """The outcome, or None when it comes later by another way. Raises
        `TransientPaymentError` when it is worth asking again."""
        ...


class SimulatedProvider:
    """A stand-in for a card processor: the method decides the outcome.

    `test_ok` pays, `test_decline` is declined, `test_flaky` fails transiently
    on its first `flaky_failures` attempts and then pays; any other method is
    declined, as a processor declines what it does not know. Each answer comes
    after `delay` seconds, as a real one takes a moment."""

    name = "simulated"
    charges = True

    def __init__(self, delay: float, flaky_failures: int = 2) -> None:
        self.delay = delay
        self.flaky_failures = flaky_failures

    async def charge(self, request: ChargeRequest) -> Charge:
        await asyncio.sleep(self.delay)
        method = request.method or TEST_OK
        ref = f"sim_{request.idempotency_key.hex}"
        if method == TEST_FLAKY and request.attempt <= self.flaky_failures:
            raise TransientPaymentError(
                f"the simulated provider is unavailable (attempt {request.attempt})"
            )
        if method in (TEST_OK, TEST_FLAKY):
            return Charge("succeeded", ref)
        if method == TEST_DECLINE:
            return Charge("failed", ref, "card declined (test_decline)")
        known = ", ".join(SIMULATED_METHODS)
        return Charge("failed", ref, f"unknown payment method {method!r} (known: {known})")


class WebhookProvider:
    """A real payment service: the customer pays it directly, and it calls
    `POST /payments/webhook` with the outcome. Nothing to do at placement."""

    name = "webhook"
    charges = False

    async def charge(self, request: ChargeRequest) -> None:
        return None


class ManualProvider:
    """Payment happens outside OrderFlow; staff confirm the order by API."""

    name = "manual"
    charges = False

    async def charge(self, request: ChargeRequest) -> None:
        return None


def provider_for(settings: Settings) -> PaymentProvider:
    """The provider PAYMENT_PROVIDER names."""
    match settings.payment_provider:
        case "simulated":
            return SimulatedProvider(settings.payment_delay_seconds)
        case "webhook":
            return WebhookProvider()
        case "manual":
            return ManualProvider()
