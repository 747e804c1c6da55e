"""ivr — a production phone agent bridging Twilio Media Streams to realtime speech models."""

__version__ = "0.1.0"
