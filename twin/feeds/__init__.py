"""Live feeds: message contract, sources (MQTT, replay, simulator), pipeline, state, rules."""

from __future__ import annotations

from twin.feeds.models import Message, Registry, decode_batch
from twin.feeds.pipeline import Counters, Pipeline

__all__ = ["Counters", "Message", "Pipeline", "Registry", "decode_batch"]
