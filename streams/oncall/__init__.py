"""The pager (``escalation pager``): escalations on ``oncall`` to Alertmanager and PagerDuty.

``pages`` is pure (what to post for each record); ``targets`` holds the two HTTP
clients; ``service`` is the consumer loop that performs what ``pages`` returns.
"""
