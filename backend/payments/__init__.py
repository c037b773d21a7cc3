"""Paying for orders: the providers, the consumer that charges placed orders, and
the signed calls a provider makes back."""
