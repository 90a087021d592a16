"""libcst edits addressed by qualified name: apply, diff, merge, knobs, validation, sources."""
