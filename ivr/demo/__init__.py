"""``ivr demo``: a complete phone call on this machine, with no API key and no network.

:mod:`ivr.demo.caller` holds the simulated caller's script (sans-I/O), :mod:`ivr.demo.report` the recording
and the summary, :mod:`ivr.demo.runner` the run itself (embedded Redis, the server on a loopback port, the
call through :class:`ivr.caller.client.SimulatedCall`), :mod:`ivr.demo.cli` the command.
"""
