"""Conversation control (issue 18): regenerate with alternatives, edit, delete, rewind,
continue, and memory the user can see and fix (summary, pins)."""
