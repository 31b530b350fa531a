"""Proposers in: HolmesGPT's responses and an HTTP intake that publish proposals.

``holmesgpt`` and ``letters`` are pure (values in, values out); ``publisher``,
``app`` and ``cli`` are the edges that talk to Kafka and HTTP clients.
"""
