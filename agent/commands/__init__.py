"""Command-line subcommands, one module per family.

Each module defines ``register(commands, sim)``: it adds its subcommands to ``commands``
(``zone-agent scale ...``) and its simulators to ``sim`` (``zone-agent sim scale ...``). A
subcommand sets ``func`` to a callable taking the parsed arguments and returning the exit
code (a coroutine function is run with ``asyncio.run``).
"""
