"""Multi-process serving: a supervisor (`manage.py serve`) and its worker processes."""
