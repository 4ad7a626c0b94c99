"""The built-in resource kinds: ``postgres``, ``llm`` and ``mcp``.

Each module holds one ``runtime.Resource`` subclass and the messages agents
ask it with, for example ``runtime.resources.postgres.Fetch``.
"""
