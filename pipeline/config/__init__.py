"""params.yaml: its pydantic models, the paper presets, the options every command shares."""
