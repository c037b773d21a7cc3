"""A benchmark run: every scenario on a cluster of its own, each beside its anchor.

`scripts/bench` starts an embedded Postgres and Redis and the nodes it needs in
a temporary folder, then measures, one after the other and in the same run:
a cached read against a bare Starlette app, orders spread over 10,000 SKUs
against a naive FastAPI + asyncpg endpoint on copies of the tables, one hot
SKU against pgbench calling the SQL function, commit-to-client propagation
under a sustained write rate, WebSocket fan-out and the memory an idle
WebSocket costs against a bare `websockets` server. It prints one table,
writes every figure as JSON and draws PNG plots. Load comes from wrk and from
client processes of its own, whose CPU is reported beside each figure.
"""


class BenchError(Exception):
    """A measurement could not be taken; the message says what went wrong."""
