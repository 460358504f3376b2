"""Shared by every test: this folder is on ``sys.path`` (pytest puts a root conftest's folder
there), so tests in sub-folders import `helpers` (the command and its refusals) and
`shapes_model` (a small trained model) from here instead of keeping copies."""
