"""Memory that outlives the summary: the turns that left the window, kept as episodes and
recalled by relevance into the prompt (issue 28)."""
