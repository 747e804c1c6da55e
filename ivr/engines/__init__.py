"""Model engines that live in this process and speak the Realtime protocol to the call.

A call talks to OpenAI Realtime over a WebSocket. The engines here present the same interface to
:class:`ivr.call.session.CallSession` — they accept Realtime client events and produce Realtime (GA) server
events — so barge-in, marks, tools, approvals and the call record work unchanged whichever engine answers:

- :mod:`ivr.engines.local` — the offline engine: local VAD, pocketsphinx, the rule-based dialogue from the
  flow's ``offline`` sections, hibari TTS. No key, no network.
- :mod:`ivr.engines.chat` — OpenAI Chat Completions audio models (``gpt-audio-1.5``,
  ``gpt-4o-audio-preview…``): local VAD cuts turns, each turn goes out as a WAV ``input_audio``.
"""
