"""Rule-based dialogue for calls on the local engine (no language model), driven by ``offline:`` YAML.

* :mod:`ivr.dialogue.slots` — parsers for dates, times, numbers, names, yes/no, choices, phone numbers,
  booking ids and offered options, from recogniser text (a façade over ``dates``, ``times``, ``numbers``,
  ``names``, ``yes_no``, ``choices``, ``booking_ids``, ``offers`` and ``spoken``);
* :mod:`ivr.dialogue.intents` — which intent an utterance expresses (examples and keywords);
* :mod:`ivr.dialogue.confidence` — the recogniser's confidence as sure / unsure / not heard;
* :mod:`ivr.dialogue.nbest` and :mod:`ivr.dialogue.soundalike` — another reading of a turn when the best one
  answers nothing (a runner-up; a weekday heard as other words);
* :mod:`ivr.dialogue.corrections` — values the caller changes ("no, wednesday", "make it 3");
* :mod:`ivr.dialogue.values` — slot values (machine and spoken forms) and template rendering;
* :mod:`ivr.dialogue.manager` — :class:`Dialogue`, the sans-I/O turn-by-turn state machine, with its parts
  in ``slot_filling``, ``readbacks``, ``failures``, ``steps`` and ``output`` (the state in ``state``, the
  actions in ``actions``).

Typical use by the engine::

    dialogue = Dialogue(flow, stage=None, context=context, today=local_today)
    perform(dialogue.start())                       # after the greeting
    perform(dialogue.heard(text, confidence))        # each caller turn
    perform(dialogue.tool_result(call_id, output))   # each tool result (JSON text)

where ``perform`` speaks each :class:`Say` and runs each :class:`CallTool` through the call runtime.
"""

from ivr.dialogue.intents import Match, match_intent
from ivr.dialogue.manager import Action, CallTool, Dialogue, Say, Waiting
from ivr.dialogue.values import SlotValue

__all__ = ["Action", "CallTool", "Dialogue", "Match", "Say", "SlotValue", "Waiting", "match_intent"]
