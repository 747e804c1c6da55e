"""``ivr demo``: a complete phone call on this machine, with no API key and no network.

:mod:`ivr.demo.caller` is the scripted caller's state machine (sans-I/O); :mod:`ivr.demo.scripts` the
callers for every shipped flow and scenario, with their shared replies in :mod:`ivr.demo.replies`;
:mod:`ivr.demo.goals` the goal checks read back from Redis; :mod:`ivr.demo.voice` the caller's second
voice; :mod:`ivr.demo.setup` what is prepared before the call; :mod:`ivr.demo.conversation` the live side
of the call; :mod:`ivr.demo.report` the recording and the summary; :mod:`ivr.demo.runner` the run itself
(embedded Redis, the server on a loopback port, the call through
:class:`ivr.caller.client.SimulatedCall`); :mod:`ivr.demo.cli` the command.
"""
