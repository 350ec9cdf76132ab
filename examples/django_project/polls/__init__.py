"""The polls app of the Django tutorial."""
