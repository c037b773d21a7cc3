"""Who is calling, and what they may do: identities, tokens, API keys and the route policy."""
