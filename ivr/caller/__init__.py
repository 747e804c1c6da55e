"""Simulated Twilio caller (``ivr call``): twilio_side (sans-I/O protocol), client (async driver), cli."""
