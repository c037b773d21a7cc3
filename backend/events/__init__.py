"""The order lifecycle's events stream: the relay from the outbox to Redis, and
the consumer groups that act on it (with retries and dead letters)."""
