"""Alerts (issue 16): rules per Pool, evaluated once per cluster by the leader
(`pooler.alerts.job`), incidents that open once per (rule, subject) and resolve by
themselves, and their notifications to webhook and email channels.

- `rules`: the rule kinds and the pure evaluation of one Pool's state against them;
- `state`: each Pool's state from the database (the same figures the console shows);
- `payload`: what a notification says (metadata only, never keys or tokens);
- `webhook`, `mail`: the two senders, each attempt bounded;
- `job`: one pass (evaluate, open and resolve, deliver what is due).
"""
