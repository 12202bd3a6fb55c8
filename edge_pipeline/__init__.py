"""The library behind the stages in tasks/: grouped by domain."""
