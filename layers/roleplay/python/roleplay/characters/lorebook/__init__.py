"""Lorebooks (a card's `character_book`, or a standalone `lorebook_v3`): the model, which
entries fire on a turn, and which fired last in each session."""
