"""Stop/cancel utterances, recognised without the model: the main node's stop detector.

The matching rules live in ``ministral_ros.speech.stop_phrases`` because the voice front end applies
the same rules to what it hears (the speech node publishes a spotted stop as a stop transcript);
this module is the name the node layer uses.
"""
from __future__ import annotations

from ministral_ros.speech.stop_phrases import StopDetector

__all__ = ['StopDetector']
