"""Language models: how to load each one, and the facts about it that uploads are checked against."""
