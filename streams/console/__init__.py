"""``escalation console``: the operators' web console (Starlette, Jinja2, htmx).

It reads the topics the worker writes into a bounded in-memory view
(:mod:`streams.console.view`), and every change it makes is a signed message on
Kafka (:mod:`streams.console.publish`); it never touches the gate's state.
"""
