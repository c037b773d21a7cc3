"""A chaos run: a cluster of its own, a mixed load, faults on a seeded schedule, a verdict.

`scripts/chaos --seconds 60 --seed 7` starts three nodes on an embedded Postgres
and Redis, drives orders, stock changes and WebSocket clients while it kills,
pauses and restarts what they depend on, then checks from the database and
from every client's records that nothing was lost, doubled or left divergent.
"""
