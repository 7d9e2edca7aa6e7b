"""The differential suite: the same raw bytes through nginx `proxy_pass` and through chistone,
each in front of a recording backend; what the backend received and what the client got are
compared case by case (see cases.py for the classes, docs/security.md for the differences
that are intended, and why)."""
