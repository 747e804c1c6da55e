"""Shared fixtures: the protocol-faithful stand-ins for OpenAI and Twilio, and the app on a loopback port."""

from tests.support.fixtures import fake_realtime, fake_twilio_rest

__all__ = ["fake_realtime", "fake_twilio_rest"]
