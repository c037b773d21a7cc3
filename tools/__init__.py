"""Development tools that run against the project from outside: nothing here ships in a node."""
