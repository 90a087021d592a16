"""The red team: one attack per file, each refused or gaining nothing (harness.py holds the shared parts)."""
