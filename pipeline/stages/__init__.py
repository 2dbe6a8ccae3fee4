"""The DVC stages' commands: thin Typer functions over the library and the helpers."""
