"""The OpenAI Realtime model connection.

- :mod:`ivr.realtime.dialect` builds client events for the GA or beta wire dialect (sans-I/O).
- :mod:`ivr.realtime.events` parses server events into small typed objects (sans-I/O).
- :mod:`ivr.realtime.connection` opens the WebSocket and holds the reconnect backoff policy.
"""
